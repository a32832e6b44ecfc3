#!/usr/bin/env bash
# Split a prepared model's verified GGUF into ~62 MiB parts under .gpu/ (git-ignored), one per `device`
# call (a call carries at most 64 MiB with the tree): `.gpu/MODEL/gguf.partNN`. Each call then carries
# one folder part and copies it to the machine's stash; scripts/gpu/setup.sh joins and verifies them.
# Usage: bash scripts/gpu/split_gguf.sh qwen2.5-coder-0.5b   (after `megacontext prepare-model --model …`)
set -euo pipefail
MODEL=${1:?usage: split_gguf.sh MODEL}
PY=${PY:-.venv/bin/python}
GGUF=$($PY -c "from megacontext import models; print(models.fetch(models.get('$MODEL')))")
OUTDIR=.gpu/$MODEL
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
split -b 62M -d -a 2 "$GGUF" "$OUTDIR/gguf.part"
for f in "$OUTDIR"/gguf.part*; do d="$OUTDIR/carry-${f##*part}"; mkdir -p "$d"; mv "$f" "$d/"; done
ls -la "$OUTDIR"/carry-*/
echo "carry each $OUTDIR/carry-NN (one per call), e.g. run(carry=['$OUTDIR/carry-00'], command='mkdir -p /root/stash && cp $OUTDIR/carry-00/gguf.part* /root/stash/')"
