#!/usr/bin/env bash
# The realistic step's follow-up on a 2 x H200 host in one device call (about 8 minutes):
#   GPU 0: our GRPO step as it is, then with the flags in $AB (default --compile-layers: the A/B of the compiled
#          decoder layers; e.g. AB="--micro-batch 16" LABEL=mb16 for fewer, larger update micro-batches)
#   GPU 1: TRL's GRPOTrainer (for its peak memory and throughput), then one profiled step of ours
#          (kernel time, busy time and idle gaps by phase, and its timeline; generation unrecorded, its cost is
#          the decode part of realistic_gpu.sh)
# Each part is cut by its --part-timeout and keeps the steps it finished.
#   bash bench/realistic_ab_gpu.sh OUT_DIR
# env: STEPS (measured steps of each A/B side, default 6), AB / LABEL (the B side's flags and file name),
#      BASE (flags for every part; a CPU dry run:
#      BASE="--shape tiny --device cpu --max-new-tokens 16" STEPS=1 bash bench/realistic_ab_gpu.sh OUT)
set -u
OUT=$1
mkdir -p "$OUT"
STEPS=${STEPS:-6} AB=${AB:---compile-layers} LABEL=${LABEL:-compiled}
RUN="python bench/realistic_step.py --tokenizer ../shared/tokenizers/qwen2.5 --data ../shared/benchmarks/math/train.jsonl ${BASE:-}"
(
  export CUDA_VISIBLE_DEVICES=0
  $RUN --parts ours --warmup 1 --steps "$STEPS" --part-timeout 170 --out "$OUT/plain.json" >"$OUT/plain.log" 2>&1
  $RUN --parts ours --warmup 1 --steps "$STEPS" $AB --part-timeout 260 --out "$OUT/$LABEL.json" \
    >"$OUT/$LABEL.log" 2>&1
  echo "GPU 0 exit $?" >>"$OUT/timeline.txt"
) &
(
  export CUDA_VISIBLE_DEVICES=1
  $RUN --parts trl --trl-warmup 1 --trl-steps 2 --part-timeout 270 --out "$OUT/trl.json" >"$OUT/trl.log" 2>&1
  $RUN --parts ours --warmup 1 --steps 1 --profile --profile-trace "$OUT/profile_trace.json.gz" --part-timeout 170 \
    --out "$OUT/profile.json" >"$OUT/profile.log" 2>&1
  echo "GPU 1 exit $?" >>"$OUT/timeline.txt"
) &
wait
for side in plain "$LABEL" profile; do
  echo "## $side" >>"$OUT/table.md"
  python bench/realistic_step.py --table "$OUT/$side.json" "$OUT/trl.json" >>"$OUT/table.md" 2>&1
done
