#!/usr/bin/env bash
# The 7B recipes on a GPU machine: random-init Qwen2.5-7B shape + stop-token hook, kill-and-resume, full eval.
#
# Runs from a copy of the repo whose ../shared holds benchmarks/ and tokenizers/qwen2.5 (on the device machine,
# copy them there in every call: the repo root is re-synced between calls and a folder made there is removed). Per recipe (GRPO, PPO):
#   run A  uninterrupted, train.max_steps=N, checkpoint every K steps
#   run B  the same command; SIGKILLed (whole process group) during step K+1, after checkpoint K is complete,
#          then started again with resume=true; its step-N checkpoint is compared with A's (bench/compare_runs.py)
# Schedule on two GPUs: GPU $GPU_A runs the full evaluation first (five benchmarks, every problem, 1024 new
# tokens, greedy, no hook: full-length responses; alone on its GPU), then PPO A and B side by side; GPU $GPU_B
# runs GRPO A and B side by side. On one GPU (GPU_A=GPU_B=0) everything shares it. SPLIT=1: each recipe's run A
# on GPU $GPU_A and run B on GPU $GPU_B (with ALGOS=ppo, say: one 7B run per GPU, none sharing).
# The recipes are used as shipped except the overrides in $COMMON (stated in BENCHMARKS.md with the numbers).
#   bash bench/recipes_gpu.sh OUT_DIR MODEL_DIR
# env: N, K, GRPO_PROMPTS, PPO_PROMPTS, EXTRA (more overrides), SKIP_EVAL / SKIP_TRAIN (one part only),
#      GPU_A / GPU_B (0 and 0 on a one-GPU machine), KILL_DELAY (s into step K+1), CPU_TEST (plain python),
#      ALGOS (default "grpo ppo": which recipes to train; on one GPU, one at a time keeps two 7B runs per GPU),
#      SPLIT (runs A on GPU_A, runs B on GPU_B)
# Each rollout batch gives the recipes' 4 optimizer steps: GRPO_PROMPTS must be a multiple of 2 and PPO_PROMPTS of 8
# (mini-batches of a whole number of the recipes' micro-batches, 4 and 2 sequences).
set -u
OUT=$1 MODEL=$2
N=${N:-4} K=${K:-2} GPU_A=${GPU_A:-0} GPU_B=${GPU_B:-1}  # GPU_A: eval, then PPO; GPU_B: GRPO
mkdir -p "$OUT" /tmp/runs
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
PLUGIN=bench.stop_hook:install
# deterministic=true: A and B are compared step by step, and without it two runs of one command already
# differ on a GPU (measured: different rollouts from step 1; with the cuBLAS/inductor env vars alone the
# backward still diverged at step 2). It costs speed (no autotuning, deterministic backward kernels).
COMMON="model.path=$MODEL train.max_steps=$N train.save_every=$K eval.before=false eval.after=false
  logging.wandb=false lora.enabled=true lora.save=adapter deterministic=true ${EXTRA:-}"
LAUNCH="accelerate launch --config_file launch/accelerate/single_gpu.yaml --num_processes 1 -m endo_rl.cli train"
[ -n "${CPU_TEST:-}" ] && LAUNCH="python -m endo_rl.cli train"

stamp() { echo "[$(date +%T)] $*" | tee -a "$OUT/timeline.txt"; }

train() {  # gpu recipe run_dir log extra-overrides...
  local gpu=$1 recipe=$2 dir=$3 log=$4; shift 4
  CUDA_VISIBLE_DEVICES=$gpu ENDO_RL_MODEL_PLUGIN=$PLUGIN MASTER_PORT=$((29500 + RANDOM % 1000)) \
    $LAUNCH "$recipe" output_dir="$dir" $COMMON "$@" >>"$log" 2>&1
}

run_a() {  # gpu name recipe extra...
  local gpu=$1 name=$2 recipe=$3; shift 3
  stamp "$name A start"
  train "$gpu" "$recipe" "/tmp/runs/$name-A" "$OUT/$name-A.log" "$@"
  stamp "$name A exit $?"
}

run_b() {  # gpu name recipe extra...: killed during step K+1, then resumed
  local gpu=$1 name=$2 recipe=$3; shift 3
  local dir=/tmp/runs/$name-B
  stamp "$name B start"
  setsid bash -c "$(declare -f train); $(declare -p COMMON LAUNCH PLUGIN); \
    train $gpu $recipe $dir $OUT/$name-B.log $*" &
  local pid=$!
  until [ -f "$dir/checkpoints/step-$K/trainer_state.json" ]; do
    kill -0 "$pid" 2>/dev/null || { stamp "$name B ended before checkpoint $K"; return; }
    sleep 1
  done
  sleep "${KILL_DELAY:-8}"
  kill -9 -- "-$pid"; wait "$pid" 2>/dev/null
  stamp "$name B SIGKILLed after checkpoint $K; checkpoints: $(ls "$dir/checkpoints" | tr '\n' ' ')"
  train "$gpu" "$recipe" "$dir" "$OUT/$name-B.log" resume=true "$@"
  stamp "$name B resumed run exit $?"
}

stamp "start"
# per-process GPU memory every 2 s (two runs share a GPU; the max per pid is each run's peak)
nvidia-smi --query-compute-apps=timestamp,gpu_uuid,pid,used_memory --format=csv,noheader -l 2 \
  >"$OUT/gpu_mem.csv" 2>/dev/null &
MEM=$!
# fewer prompts per step than the 8-GPU recipes, the same 4 optimizer steps (mini-batches) per rollout batch
GP=${GRPO_PROMPTS:-8} PP=${PPO_PROMPTS:-32}
GRPO="recipes/qwen2.5-math-7b-grpo.yaml train.prompts_per_step=$GP train.mini_batch_size=$((GP * 8 / 4))"
PPO="recipes/qwen2.5-math-7b-ppo.yaml train.prompts_per_step=$PP train.mini_batch_size=$((PP / 4))"
ALGOS=${ALGOS:-grpo ppo}
has() { case " $ALGOS " in *" $1 "*) return 0 ;; esac; return 1; }
JOBS=()
# each run's GPU: GRPO's A and B share GPU_B, PPO's share GPU_A; SPLIT: every A on GPU_A, every B on GPU_B
GRPO_A=$GPU_B GRPO_B=$GPU_B PPO_A=$GPU_A PPO_B=$GPU_A
[ -n "${SPLIT:-}" ] && GRPO_A=$GPU_A PPO_B=$GPU_B
if [ -z "${SKIP_TRAIN:-}" ] && has grpo; then
  run_a "$GRPO_A" grpo $GRPO & JOBS+=($!)
  run_b "$GRPO_B" grpo $GRPO & JOBS+=($!)
fi
(
  if [ -z "${SKIP_EVAL:-}" ]; then
    stamp "eval start"
    CUDA_VISIBLE_DEVICES=$GPU_A python -m endo_rl.cli eval --model "$MODEL" \
      --benchmarks math500,minerva_math,olympiadbench,aime24,amc23 --data-dir ../shared/benchmarks \
      --template qwen25-math-cot --max-new-tokens 1024 --batch-size 64 ${EVAL_EXTRA:-} \
      --out "$OUT/eval_report.json" --no-progress >"$OUT/eval.log" 2>&1
    stamp "eval exit $?"
  fi
  if [ -z "${SKIP_TRAIN:-}" ] && has ppo; then
    run_a "$PPO_A" ppo $PPO &
    run_b "$PPO_B" ppo $PPO &
    wait
  fi
) & JOBS+=($!)
wait "${JOBS[@]}"  # not a bare `wait`: that would also wait for the nvidia-smi sampler, which never ends
kill "$MEM" 2>/dev/null
[ -n "${SKIP_TRAIN:-}" ] && exit 0
for name in $ALGOS; do
  for run in A B; do cp "/tmp/runs/$name-$run/metrics.jsonl" "$OUT/$name-$run.metrics.jsonl" 2>/dev/null; done
  python bench/compare_runs.py "/tmp/runs/$name-A" "/tmp/runs/$name-B" "$K" "$N" | tee "$OUT/$name-resume.txt"
done
du -sh /tmp/runs/*/checkpoints/* >>"$OUT/timeline.txt" 2>/dev/null
df -h /tmp | tail -1 >>"$OUT/timeline.txt"
