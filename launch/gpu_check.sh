#!/usr/bin/env bash
# Multi-GPU equivalence check (issue: ZeRO-2/3 match the single-process loss) on 2 GPUs, the tiny recipe.
# Usage: bash launch/gpu_check.sh OUT_DIR   (needs 2 GPUs, deepspeed installed, a Qwen2.5 tokenizer dir in $TOKENIZER)
set -euo pipefail
out=${1:?output dir}
mkdir -p "$out"
python3 - <<PY
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
torch.manual_seed(0)
cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645,
                  pad_token_id=151643)
Qwen2ForCausalLM(cfg).save_pretrained("$out/tiny")
AutoTokenizer.from_pretrained("${TOKENIZER}").save_pretrained("$out/tiny")
PY
common="recipes/debug/tiny_gpu.yaml model.path=$out/tiny logging.wandb=false"
python3 -m endo_rl.cli train $common output_dir=$out/single
for stage in zero2 zero3; do
  accelerate launch --config_file launch/accelerate/$stage.yaml --num_processes 2 --mixed_precision no \
    -m endo_rl.cli train $common output_dir=$out/$stage
done
python3 launch/compare_metrics.py $out/single $out/zero2 $out/zero3
