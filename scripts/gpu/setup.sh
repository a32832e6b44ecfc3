# Sourced by the scripts/gpu/*.sh jobs on a lent GPU machine (the `device` tool): installs the carried
# wheels (.whl/: transformers, gguf, regex as pinned here) and rebuilds $MODEL (a registry name, default
# smollm2-135m) from its GGUF, which travels in ~62 MiB parts under $STASH because one call may carry at
# most 64 MiB with the tree: `bash scripts/gpu/split_gguf.sh MODEL` writes them to .gpu/ (git-ignored);
# each call carries one and copies it to $STASH; the job's call then joins and verifies them here.
# Local dry run: PY=.venv/bin/python DEVICE=cpu STASH=DIR RUNS=DIR OUT=DIR bash scripts/gpu/<job>.sh
STASH=${STASH:-/root/stash}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/root/runs}
t0=$(date +%s); stamp() { echo "== $(( $(date +%s) - t0 )) s: $*"; }
[ -n "${SKIP_PIP:-}" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MEGACONTEXT_HOME=${MEGACONTEXT_HOME:-/root/mc}
MODEL=${MODEL:-smollm2-135m}
mkdir -p $RUNS
# where `megacontext prepare-model` looks for a verified GGUF before downloading
GGUF=$($PY -c "from megacontext import models; print(models.gguf_path(models.get('$MODEL')))") || exit 1
mkdir -p "$(dirname $GGUF)"
cat $STASH/gguf.part* > $GGUF.tmp || exit 1
# the registry's pinned sha256 decides; a wrong or missing part stops here
$PY -c "
import sys; from megacontext import models; s = models.get('$MODEL'); h = models.sha256_file(sys.argv[1])
sys.exit(0 if h == s.sha256 else f'{sys.argv[1]}: sha256 {h} != pinned {s.sha256} (a part missing or wrong?)')" $GGUF.tmp || exit 1
mv $GGUF.tmp $GGUF
mc() { $PY -m megacontext.cli "$@"; }
stamp prepare; mc prepare-model --model $MODEL || exit 1
