#!/usr/bin/env bash
# GistNet on a lent GPU (the `device` tool): L1 then L2 training, time-boxed, then `eval gist` on 500+
# held-out windows. Expects the default model's GGUF in parts under $STASH (it is larger than one call
# may carry), the transformers/gguf wheels in .whl/ and the corpora in data/corpora/.
# Results in $OUT (exported nets + cards + logs + eval table), refreshed after every stage.
# With the device tool: call 1 carries .gpuA (GGUF part 0) and copies it to /root/stash, call 2 the
# same for .gpuB, call 3 carries .whl and data/corpora and runs this script (see docs/RESULTS.md).
set -uo pipefail
L1_SECONDS=${L1_SECONDS:-300}
L2_SECONDS=${L2_SECONDS:-100}
EVAL_WINDOWS=${EVAL_WINDOWS:-512}
BATCH=${BATCH:-32}
# $OUT takes at most 8 files of 16 MiB: the exported nets, their cards, the logs and the eval table.
pack() { for f in $RUNS/gistnet.safetensors $RUNS/gistnet.json $RUNS/gistnet-l2.safetensors $RUNS/gistnet-l2.json \
                  $RUNS/eval/gist_eval.json; do [ -f $f ] && cp $f $OUT/; done
         [ -f $RUNS/l1/log.jsonl ] && cp $RUNS/l1/log.jsonl $OUT/l1_log.jsonl
         [ -f $RUNS/l2/log.jsonl ] && cp $RUNS/l2/log.jsonl $OUT/l2_log.jsonl; true; }
source scripts/gpu/setup.sh
$PY -c "
import torch, transformers; from megacontext.base import BaseModel
b = BaseModel.load('$MODEL', device='$DEVICE'); print('fingerprint', b.info.fingerprint, 'torch', torch.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" || exit 1
stamp L1; mc train gistnet --model $MODEL --config configs/gistnet-gpu.json --device $DEVICE --time-budget $L1_SECONDS \
   --out $RUNS/l1 --quiet
tail -n 3 $RUNS/l1/log.jsonl
cp $RUNS/l1/gistnet.safetensors $RUNS/l1/gistnet.json $RUNS/; pack
stamp L2; mc train gistnet --model $MODEL --level 2 --l1 $RUNS/l1/gistnet.safetensors --config configs/gistnet-l2-gpu.json \
   --device $DEVICE --time-budget $L2_SECONDS --out $RUNS/l2 --quiet
tail -n 3 $RUNS/l2/log.jsonl
cp $RUNS/l2/gistnet-l2.safetensors $RUNS/l2/gistnet-l2.json $RUNS/; pack
stamp eval; mc eval gist --model $MODEL --windows $EVAL_WINDOWS --checkpoint $RUNS/gistnet.safetensors --device $DEVICE --batch $BATCH \
   --out $RUNS/eval --quiet; pack
stamp done
