#!/usr/bin/env bash
# The realistic step (issue 12, BENCHMARKS.md section 1) on a 2 x H200 host in one device call of <= 10 minutes:
#   GPU 0: our GRPO step, then our PPO step (each with one extra profiled step: kernel time by phase)
#   GPU 1: the decode step (each attention of $ATTN), the decode step split into parts (decode_breakdown.py),
#          the ceilings, then TRL (FLEX_TESTS=1: the flex decode-attention GPU tests first, as run 3 did)
# Each part is cut by its --part-timeout and keeps the steps it finished (under 'partial' in the JSON).
#   bash bench/realistic_gpu.sh OUT_DIR
# env: STEPS (measured steps per part, default 10), PART_S (seconds per part on GPU 0, default 240),
#      TRL_S (TRL's seconds, default 300), ATTN (decode attentions, default sdpa; run 3: sdpa,flex), EXTRA (more flags for
#      our parts, e.g. --compile-layers), BASE (flags for every part; a CPU dry run of the script:
#      BASE="--shape tiny --device cpu --max-new-tokens 16" STEPS=1 bash bench/realistic_gpu.sh OUT)
set -u
OUT=$1
mkdir -p "$OUT"
STEPS=${STEPS:-10} PART_S=${PART_S:-240} TRL_S=${TRL_S:-300} ATTN=${ATTN:-sdpa}
DATA="--tokenizer ../shared/tokenizers/qwen2.5 --data ../shared/benchmarks/math/train.jsonl ${BASE:-}"
(
  CUDA_VISIBLE_DEVICES=0 python bench/realistic_step.py $DATA --parts ours,ours_ppo --warmup 1 \
    --steps "$STEPS" --profile --part-timeout "$PART_S" ${EXTRA:-} --out "$OUT/r0.json" >"$OUT/r0.log" 2>&1
  echo "GPU 0 exit $?" >>"$OUT/timeline.txt"
) &
(
  if [ -n "${FLEX_TESTS:-}" ]; then
    CUDA_VISIBLE_DEVICES=1 timeout 120 python -m pytest -q -m gpu tests/test_flex_gpu.py >"$OUT/flex_gpu_tests.log" 2>&1
    echo "flex GPU tests exit $?" >>"$OUT/timeline.txt"
  fi
  CUDA_VISIBLE_DEVICES=1 python bench/realistic_step.py $DATA --parts decode,decode_parts,ceilings \
    --decode-attention "$ATTN" --part-timeout 150 --out "$OUT/r1.json" >"$OUT/r1.log" 2>&1
  CUDA_VISIBLE_DEVICES=1 python bench/realistic_step.py $DATA --parts trl --trl-warmup 1 --trl-steps 4 \
    --part-timeout "$TRL_S" --out "$OUT/r2.json" >"$OUT/r2.log" 2>&1
  echo "GPU 1 exit $?" >>"$OUT/timeline.txt"
) &
wait
python bench/realistic_step.py --table "$OUT"/r0.json "$OUT"/r1.json "$OUT"/r2.json >"$OUT/table.md" 2>&1
