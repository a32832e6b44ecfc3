#!/usr/bin/env bash
# The benchmark on a lent GPU (the `device` tool): `megacontext bench --device cuda` for at most BENCH_SECONDS,
# resumably, its rows (gzipped), report and log in $OUT, refreshed every 30 s (what is there comes back even if the
# call is cut off). TIER: report for smollm2-135m, light for the other models (Qwen is ~3× slower); MODEL as in
# setup.sh. Each call carries the tree plus, from earlier calls, the stash in $STASH: the model's GGUF parts
# (split_gguf.sh) and the embedder's (split_embedder.sh; without them the MiniLM-ranked methods are left out, in one
# line). This call carries .whl/ (transformers, gguf, regex, bm25s), data/corpora/test (the report's books), the
# rows so far as $ROWS_IN/<tier rows>.jsonl[.gz] (default .gpu/bench/$MODEL: put the last $OUT there to resume)
# and, for LoCoMo, LOCOMO=<a carried copy of the file> (never committed; without it those tasks are skipped).
# BENCH_ARGS adds bench flags (e.g. "--lengths 1000,8000 --trials 5").
# Local dry run: PY=.venv/bin/python DEVICE=cpu SKIP_PIP=1 STASH=DIR RUNS=DIR OUT=DIR BENCH_ARGS="--trials 1 ..."
#   bash scripts/gpu/bench.sh
set -uo pipefail
BENCH_SECONDS=${BENCH_SECONDS:-480}
BENCH_ARGS=${BENCH_ARGS:-}
source scripts/gpu/setup.sh
TIER=${TIER:-$([ "$MODEL" = smollm2-135m ] && echo report || echo light)}
STEM=$([ "$TIER" = light ] && echo report || echo $TIER)  # light's rows are report rows
ROWS_IN=${ROWS_IN:-.gpu/bench/$MODEL}
BENCH=$RUNS/bench
mkdir -p $BENCH
if [ -f $ROWS_IN/$STEM.jsonl.gz ]; then gunzip -c $ROWS_IN/$STEM.jsonl.gz > $BENCH/$STEM.jsonl
elif [ -f $ROWS_IN/$STEM.jsonl ]; then cp $ROWS_IN/$STEM.jsonl $BENCH/; fi
[ -f $BENCH/$STEM.jsonl ] && echo "resuming from $(wc -l < $BENCH/$STEM.jsonl) rows"
EMB=$MEGACONTEXT_HOME/embedders
if ls $STASH/minilm.part* >/dev/null 2>&1 && [ ! -f $EMB/all-MiniLM-L6-v2/config.json ]; then
  mkdir -p $EMB && cat $STASH/minilm.part* > $EMB/minilm.tar || exit 1
  [ "$(sha256sum $EMB/minilm.tar | cut -d' ' -f1)" = "$(cat $STASH/minilm.sha256)" ] || { echo "embedder parts: sha256 mismatch"; exit 1; }
  tar xf $EMB/minilm.tar -C $EMB && rm $EMB/minilm.tar
fi
METHODS=""
if [ ! -f $EMB/all-MiniLM-L6-v2/config.json ]; then
  METHODS=$($PY -c "from megacontext.eval.bench import TIERS, DEFAULT_METHODS
print(','.join(m for m in TIERS['$TIER'].methods or DEFAULT_METHODS if 'minilm' not in m and 'hybrid' not in m))")
  echo "no MiniLM embedder in the stash (scripts/gpu/split_embedder.sh): running without rag_minilm*, rag_hybrid*"
fi
pack() { [ -f $BENCH/$STEM.jsonl ] && gzip -c $BENCH/$STEM.jsonl > $OUT/$STEM.jsonl.gz.tmp && mv $OUT/$STEM.jsonl.gz.tmp $OUT/$STEM.jsonl.gz
         for f in $BENCH/$STEM.md $BENCH/${STEM}_summary.json; do [ -f $f ] && cp $f $OUT/; done; true; }
$PY -c "
import torch, transformers; from megacontext.base import BaseModel
b = BaseModel.load('$MODEL', device='$DEVICE'); print('model', b.info.name, 'on', b.device, 'torch', torch.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" || exit 1
stamp "bench $TIER"
timeout --kill-after=30 $BENCH_SECONDS $PY -m megacontext.cli bench --tier $TIER --model $MODEL --device $DEVICE \
  --out $BENCH --quiet ${METHODS:+--methods $METHODS} ${LOCOMO:+--locomo $LOCOMO} $BENCH_ARGS > $RUNS/bench.log 2>&1 &
job=$!
while kill -0 $job 2>/dev/null; do sleep 30; pack; done
wait $job; rc=$?
# cut off by the time limit: the report of the rows so far (a finished run wrote its own)
[ $rc = 0 ] || $PY -c "from pathlib import Path; from megacontext.eval.bench import report
report(Path('$BENCH/$STEM.jsonl'), Path('$BENCH'))" 2>>$RUNS/bench.log
pack; head -n 1 $RUNS/bench.log; tail -n 2 $RUNS/bench.log; cp $RUNS/bench.log $OUT/
stamp "done (bench exit $rc; 124: the time limit: carry $OUT as ROWS_IN and rerun to resume)"
