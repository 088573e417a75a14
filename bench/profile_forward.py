"""Where the bare model's no-grad forward spends its time on realistic lengths: a kernel profile by category.

    python bench/profile_forward.py [--shape 7b] [--device cuda] [--rows 64] [--micro-batch 32]

Issue 12's realistic step measured the Hugging Face model's own forward (the reference pass without the
trainer, `bare_passes.py`) at about 2.7x its matmul floor. This splits that forward into kernel categories
(matmuls, attention, everything else) with torch.profiler. Lengths as in the realistic step: prompts of
60-200 tokens, responses geometric with mean 256 (the stop-token hook's p = 1/256) capped at 1024, grouped
by length into micro-batches (`rl.rollout.micro_batches`) and left-padded as the trainer does; random-init
weights of the given shape.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_step as base  # noqa: E402
from bare_passes import response_logits  # noqa: E402
from profile_step import profile_phases  # noqa: E402


def rollout(rows: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    gen = torch.Generator().manual_seed(seed)
    prompts = [[11] * int(torch.randint(60, 201, (1,), generator=gen)) for _ in range(rows)]
    lengths = torch.empty(rows).geometric_(1 / 256, generator=gen).clamp(max=1024).long().tolist()
    return prompts, [[13] * n for n in lengths]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="7b", choices=list(base.SHAPES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from endo_rl.rl import rollout as rl

    model = base.build_model(args).eval()
    prompts, responses = rollout(args.rows, args.seed)
    lengths = rl.sequence_lengths(prompts, responses)
    groups = rl.micro_batches(lengths, args.micro_batch)
    batches = [rl.packed(prompts, responses, g, 0, torch.device(args.device)) for g in groups]
    real = sum(lengths)
    computed = rl.computed_tokens(lengths, groups)

    @torch.no_grad()
    def forward():
        for b in batches:
            response_logits(model, b)  # what bench/bare_passes.py times as the bare forward

    seconds = min(base.timed(forward, args.device, repeat=3, warmup=1))
    # no phase ranges around the forward: all of it is reported as "between"
    whole = profile_phases(forward, args.device, top=20)["between"]
    by_cat, total = whole["by_category"], whole["kernel_s"]
    print(
        f"{args.shape}, {args.rows} rows in micro-batches of {args.micro_batch}: {real} real tokens, "
        f"{computed} computed (padding included); forward {seconds:.3f} s (best of 3)"
    )
    for cat, s in by_cat.items():  # largest first
        print(f"  {cat:10s} {s:8.3f} s  {100 * s / total:5.1f}% of kernel time")
    print("top kernels:")
    for ms, count, cat, name in whole["top"]:
        print(f"  {ms:9.1f} ms  x{count:<5d} [{cat}] {name[:110]}")


if __name__ == "__main__":
    main()
