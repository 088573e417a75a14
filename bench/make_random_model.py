"""A random-init Qwen2 of a given shape (default: Qwen2.5-7B's), saved as safetensors with a tokenizer.

    python bench/make_random_model.py OUT_DIR --tokenizer ../shared/tokenizers/qwen2.5 [--shape 7b|tiny]

The 7B shape: hidden 3584, intermediate 18944, 28 layers, 28 heads, 4 KV heads, vocab 152064, untied LM
head, bf16. Weights are drawn on the GPU when there is one (seconds instead of minutes on the CPU).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_step as base  # noqa: E402  (the shapes and their config)


def build(shape: str, seed: int) -> Qwen2ForCausalLM:
    # the tiny shape keeps the 7B vocabulary, so the real tokenizer's every id fits
    cfg = base.qwen2_config(shape, vocab_size=base.SHAPES["7b"]["vocab_size"], dtype="bfloat16")
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--shape", choices=sorted(base.SHAPES), default="7b")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    model = build(args.shape, args.seed)
    built = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    model.save_pretrained(args.out, safe_serialization=True)
    AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{args.shape}: {n / 1e9:.2f}B parameters, built in {built - start:.1f} s, "
        f"saved to {args.out} in {time.perf_counter() - built:.1f} s"
    )


if __name__ == "__main__":
    main()
