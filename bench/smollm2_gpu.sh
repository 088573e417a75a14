#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end on a GPU (issue 13 item 4): GRPO on GSM8K train with the shipped recipe, the
# evaluation before / during / after (GSM8K test + the five math benchmarks, every problem), then RM-Bench's
# chat, safety-refuse and safety-response subsets, every item, with every method (one process per method).
#   bash bench/smollm2_gpu.sh OUT_DIR GGUF_FILE
# env: STEPS (default 40), PROMPTS (prompts per step, default 32), EVERY (eval.every, default 10),
#      TRAIN_TIMEOUT (s for the training run, default 1800: what it wrote is copied out even when it is cut),
#      RM_TIMEOUT (s for the rm-eval methods, default 240), SMOKE (tiny sizes, to check the script on a CPU),
#      PARTS (default "train rm"; run the two parts as two invocations to put them on two GPUs at once)
# The five rm-eval methods run at the same time, one process each (a 135M model leaves the GPU mostly idle).
# The recipe is used as shipped except: model.path, output_dir, and the scale (its shipped scale is a CPU
# budget: 4 steps of 2 prompts, 5 problems per benchmark): train.max_steps, train.prompts_per_step,
# train.mini_batch_size (4 optimizer steps per rollout batch, as the 7B recipes), generation.batch_size,
# train.micro_batch_size, eval.limit (none: every problem), eval.every. Everything else is the recipe's.
set -u
OUT=$1 GGUF=$2
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
STEPS=${STEPS:-40} PROMPTS=${PROMPTS:-32} EVERY=${EVERY:-10}
RUN=${RUN_DIR:-/tmp/smol}
SIZES="generation.batch_size=64 train.micro_batch_size=16 eval.limit=null"
[ -n "${SMOKE:-}" ] && SIZES="generation.batch_size=8 train.micro_batch_size=2 eval.limit=1
  generation.max_new_tokens=8 eval.max_new_tokens=8"
stamp() { echo "[$(date +%T)] $*" | tee -a "$OUT/timeline.txt"; }

PARTS=${PARTS:-train rm}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

if has train; then
stamp "train start"
timeout "${TRAIN_TIMEOUT:-1800}" python3 -m endo_rl.cli train recipes/smollm2-135m-gsm8k-grpo.yaml model.path="$GGUF" output_dir="$RUN" \
  train.max_steps="$STEPS" train.prompts_per_step="$PROMPTS" train.mini_batch_size=$((PROMPTS * 8 / 4)) \
  train.save_every="$STEPS" eval.every="$EVERY" logging.wandb=false $SIZES >"$OUT/train.log" 2>&1
stamp "train exit $?"
cp "$RUN/metrics.jsonl" "$RUN/curves.png" "$OUT/" 2>/dev/null
for tag in "$RUN"/eval/*/; do
  [ -f "$tag/report.json" ] && cp "$tag/report.json" "$OUT/eval_$(basename "$tag").json"
done
cp "$RUN/eval/comparison.png" "$OUT/" 2>/dev/null
fi
has rm || exit 0

LIMIT=""
[ -n "${SMOKE:-}" ] && LIMIT="--limit 1"
rm_eval() {  # method
  stamp "rm-eval $1 start"
  timeout "${RM_TIMEOUT:-240}" python3 -m endo_rl.cli rm-eval --model "$GGUF" \
    --data ../shared/benchmarks/rm_bench --subsets chat safety-refuse safety-response --method "$1" \
    --batch-size 64 --out "$OUT/rm_$1.json" --no-progress $LIMIT >"$OUT/rm_$1.log" 2>&1
  stamp "rm-eval $1 exit $?"
}
for method in endogenous loglik_norm verifier genrm_pointwise genrm_pairwise; do rm_eval "$method" & done
wait
