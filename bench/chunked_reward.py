"""Micro-benchmark: chunked endogenous reward vs the naive full-logits path (time and peak memory).

Each path runs in a fresh subprocess so its peak memory is its own: peak RSS growth on CPU
(ru_maxrss after the forward minus before it), torch.cuda.max_memory_allocated growth on CUDA.

    python bench/chunked_reward.py                       # CPU, tiny Qwen2 with the real 151,936 vocab
    python bench/chunked_reward.py --device cuda --batch 16 --prompt-len 1024 --response-len 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def tiny_qwen(vocab: int, hidden: int, layers: int, dtype: torch.dtype, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_one(args: argparse.Namespace) -> dict:
    from endo_rl.core.batch import pack
    from endo_rl.reward.reference import naive_reference_forward, reference_forward

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = tiny_qwen(args.vocab, args.hidden, args.layers, dtype, args.device)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, args.vocab, (args.batch, args.prompt_len), generator=g).tolist()
    responses = torch.randint(0, args.vocab, (args.batch, args.response_len), generator=g).tolist()
    batch = pack(prompts, responses, pad_id=0).to(args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = peak_bytes(args.device)
    start = time.perf_counter()
    with torch.no_grad():
        if args.mode == "chunked":
            out = reference_forward(model, batch, alpha=1.0, chunk_size=args.chunk_size)
        else:
            out = naive_reference_forward(model, batch, alpha=1.0)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "mode": args.mode,
        "seconds": seconds,
        "peak_growth_bytes": peak_bytes(args.device) - before,
        "reward_sum": float(out.rewards_B.sum()),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["both", "chunked", "naive"], default="both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--response-len", type=int, default=256)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.mode != "both":
        result = run_one(args)
        print(json.dumps(result))
        return result
    results = {}
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
    for mode in ("naive", "chunked"):
        cmd = [sys.executable, __file__, *passthrough, "--mode", mode]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results))
    else:
        n = args.batch * (args.prompt_len + args.response_len)
        print(
            f"{n} tokens ({args.batch} x {args.prompt_len}+{args.response_len}), vocab {args.vocab}, "
            f"{args.device}, {args.dtype}, chunk {args.chunk_size}"
        )
        print(f"{'path':<8} {'time s':>8} {'peak growth MiB':>16}")
        for mode, r in results.items():
            print(f"{mode:<8} {r['seconds']:>8.3f} {r['peak_growth_bytes'] / 2**20:>16.1f}")
        ratio = results["naive"]["peak_growth_bytes"] / max(results["chunked"]["peak_growth_bytes"], 1)
        print(f"naive / chunked peak memory: {ratio:.1f}x")
    return results


if __name__ == "__main__":
    main()
