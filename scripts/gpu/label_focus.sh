#!/usr/bin/env bash
# Counterfactual focus labels for LensNet on a lent GPU, time-boxed: WORKERS parallel
# `megacontext label focus` processes (seeds 0..WORKERS-1, one folder each) for LABEL_SECONDS, each
# folder packed into $OUT/labels-sN.tar every 20 s (what is there comes back even if the call is cut
# off). Here: `megacontext label merge DIR/labels-s*.tar --out data/lens_labels`.
set -uo pipefail
LABEL_SECONDS=${LABEL_SECONDS:-120}
WORKERS=${WORKERS:-6}
SNAPSHOTS=${SNAPSHOTS:-2000}
source scripts/gpu/setup.sh
pack() { for s in $(seq 0 $((WORKERS - 1))); do [ -d $RUNS/labels-s$s ] || continue
           (cd $RUNS && tar cf $OUT/labels-s$s.tar.tmp labels-s$s && mv $OUT/labels-s$s.tar.tmp $OUT/labels-s$s.tar); done; }
stamp label
for s in $(seq 0 $((WORKERS - 1))); do
  OMP_NUM_THREADS=2 timeout $LABEL_SECONDS $PY -m megacontext.cli label focus --model $MODEL --device $DEVICE \
      --snapshots $SNAPSHOTS --seed $s --out $RUNS/labels-s$s --quiet &
done
while [ -n "$(jobs -r)" ]; do sleep 20; pack 2>/dev/null; done
pack; cat $RUNS/labels-s*/index.jsonl | wc -l; stamp done
