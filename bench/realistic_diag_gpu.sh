#!/usr/bin/env bash
# Where the realistic step's time goes, on a 2 x H200 host in one device call (about 6 minutes):
#   GPU 0: our GRPO step with the flags in $A (1 warm-up + $STEPS), then one more step under torch.profiler with
#          Python stacks: each phase's idle device time charged to the host op (and line of endo_rl/) running in it
#   GPU 1: the decode step split into parts, each timed alone (decode_breakdown.py), then part $B_PART (default
#          ours: our GRPO step, with one profiled step without stacks) with the flags in $AB (default
#          --micro-batch 16: half as many update micro-batches, twice the rows), 1 warm-up + $B_STEPS
#   bash bench/realistic_diag_gpu.sh OUT_DIR
# env: A, STEPS (default 4), B_PART (ours or trl), AB, B_STEPS (default $STEPS), LABEL (the B side's file name,
#      default mb16), BASE (flags for every part; a CPU dry run:
#      BASE="--shape tiny --device cpu --max-new-tokens 16" STEPS=1 bash bench/realistic_diag_gpu.sh OUT)
# As run (2026-11-30, BENCHMARKS.md section 1, bench/results/h200x2_realistic_v4/): call 1 (29a9157) and call 3
#      (a728b05) with the defaults; call 2 (ef765e7) with
#      A="--micro-batch 16" B_PART=trl AB="--micro-batch 16" B_STEPS=1 LABEL=trl_mb16
set -u
OUT=$1
mkdir -p "$OUT"
STEPS=${STEPS:-4} AB=${AB:---micro-batch 16} LABEL=${LABEL:-mb16} B_PART=${B_PART:-ours}
B_STEPS=${B_STEPS:-$STEPS}
RUN="python bench/realistic_step.py --tokenizer ../shared/tokenizers/qwen2.5 --data ../shared/benchmarks/math/train.jsonl ${BASE:-}"
PROFILE="--profile"
[ "$B_PART" = ours ] || PROFILE=""
(
  export CUDA_VISIBLE_DEVICES=0
  $RUN --parts ours --warmup 1 --steps "$STEPS" ${A:-} --profile --profile-stack --part-timeout 360 \
    --out "$OUT/plain.json" >"$OUT/plain.log" 2>&1
  echo "GPU 0 exit $?" >>"$OUT/timeline.txt"
) &
(
  export CUDA_VISIBLE_DEVICES=1
  $RUN --parts decode_parts --part-timeout 180 --out "$OUT/decode_parts.json" >"$OUT/decode_parts.log" 2>&1
  $RUN --parts "$B_PART" --warmup 1 --steps "$B_STEPS" $AB $PROFILE --part-timeout 270 --out "$OUT/$LABEL.json" \
    >"$OUT/$LABEL.log" 2>&1
  echo "GPU 1 exit $?" >>"$OUT/timeline.txt"
) &
wait
for side in plain "$LABEL"; do
  echo "## $side" >>"$OUT/table.md"
  python bench/realistic_step.py --table "$OUT/$side.json" >>"$OUT/table.md" 2>&1
done
