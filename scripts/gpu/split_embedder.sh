#!/usr/bin/env bash
# Pack the retrieval embedder (all-MiniLM-L6-v2, ~88 MiB: more than one `device` call may carry) into ~62 MiB parts
# under .gpu/minilm/carry-NN (git-ignored) with its sha256; scripts/gpu/bench.sh joins, verifies and unpacks them
# from $STASH. Usage: bash scripts/gpu/split_embedder.sh   (after the embedder was fetched once, e.g. by `make bench`)
set -euo pipefail
PY=${PY:-.venv/bin/python}
DIR=$($PY -c "from megacontext import models; print(models.embedder_dir())")
OUTDIR=.gpu/minilm
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
tar cf "$OUTDIR/minilm.tar" -C "$(dirname "$DIR")" "$(basename "$DIR")"
sha256sum "$OUTDIR/minilm.tar" | cut -d' ' -f1 > "$OUTDIR/minilm.sha256"
split -b 62M -d -a 2 "$OUTDIR/minilm.tar" "$OUTDIR/minilm.part" && rm "$OUTDIR/minilm.tar"
for f in "$OUTDIR"/minilm.part*; do d="$OUTDIR/carry-${f##*part}"; mkdir -p "$d"; mv "$f" "$d/"; done
cp "$OUTDIR/minilm.sha256" "$OUTDIR/carry-00/"
ls -la "$OUTDIR"/carry-*/
echo "carry each $OUTDIR/carry-NN (one per call) and copy it to the stash: run(carry=['$OUTDIR/carry-00'], command='mkdir -p /root/stash && cp $OUTDIR/carry-00/minilm.* /root/stash/')"
