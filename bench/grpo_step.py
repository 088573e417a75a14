"""GRPO step with the endogenous reward: endo_rl vs TRL's GRPOTrainer, side by side, plus decode and reference costs.

One command on a GPU machine runs every part, each in its own process (so peak memory is that part's own):

    python bench/grpo_step.py --tokenizer DIR --out results.json          # 7B-shaped random model, 1 GPU
    python bench/grpo_step.py --shape tiny --device cpu --tokenizer DIR   # seconds on a CPU, to check the script
    python bench/grpo_step.py --table results.json                       # the table of a saved run

Parts:
  decode     ms per decode step at batch 16 and 64: HF generate (dynamic cache) vs endo_rl's static cache with
             CUDA graphs, against the weight-read bound (parameter bytes / measured device copy bandwidth)
  reference  endo_rl's reference pass (rewards + KL log-probs, chunked head) vs a bare HF forward of the same tokens
  ours, trl  a full GRPO step (generate, reference + reward, update), median of --steps after --warmup steps
  ours_ppo   our PPO step (dense token rewards, value head, GAE) at the same settings (TRL's PPO not run)

The model is random-init with the real shape; random weights rarely emit EOS, so completions run to
--max-new-tokens on both sides (the measured mean completion length is reported for each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {  # Qwen2.5-Math-7B, and a tiny one for checking the script on a CPU
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=151936,
    ),
}


def qwen2_config(shape: str, **overrides):
    """The Qwen2 config of `shape` (untied LM head, <|endoftext|> as BOS/EOS/pad), with `overrides`."""
    from transformers import Qwen2Config

    fields = dict(
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=151643,
        eos_token_id=151643,
        pad_token_id=151643,
    )
    return Qwen2Config(**{**SHAPES[shape], **fields, **overrides})


def build_model(args: argparse.Namespace):
    from transformers import AutoModelForCausalLM

    cfg = qwen2_config(args.shape)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(args.device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def prompt_ids(args: argparse.Namespace, tokenizer, n: int) -> list[list[int]]:
    """n distinct prompts of exactly --prompt-len tokens of ordinary text."""
    text = " ".join(
        f"Problem {i}: compute the sum of the first {i + 3} odd numbers and explain." for i in range(200)
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i * 7 : i * 7 + args.prompt_len] for i in range(n)]


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


# ----- part: decode ------------------------------------------------------------------------------------------


def copy_bandwidth(device: str) -> float:
    """Bytes per second moved by a device-to-device copy (read + write), the practical HBM ceiling."""
    x = torch.empty(2**30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    seconds = statistics.median(timed(lambda: y.copy_(x), device, repeat=10))
    return 2 * x.numel() / seconds


def part_decode(args: argparse.Namespace, model, tokenizer) -> dict:
    """Decode-step time = (time for N new tokens - time for 1 new token) / (N - 1): prefill excluded."""
    from endo_rl.generation import static as static_decode
    from endo_rl.generation.sampling import SamplingConfig

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound_ms = 1e3 * weight_bytes / copy_bandwidth(args.device) if args.device == "cuda" else float("nan")
    steps, result = args.decode_tokens, {"weight_bytes": weight_bytes, "bound_ms": bound_ms}
    for batch in args.decode_batches:
        prompts = prompt_ids(args, tokenizer, batch)
        ids = torch.tensor(prompts, device=args.device)
        decoder = static_decode.StaticDecoder(model, batch, args.prompt_len + steps)

        def hf(n: int, ids=ids):
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=True,
                pad_token_id=0,
            )

        def ours(n: int, decoder=decoder, prompts=prompts):
            static_decode.generate_rows(decoder, prompts, SamplingConfig(n, 1.0), stop_ids=[-1], pad_id=0)

        row = {}
        for name, fn in (("hf_dynamic_ms", hf), ("ours_ms", ours)):
            full = statistics.median(timed(lambda fn=fn: fn(steps), args.device, repeat=3))
            first = statistics.median(timed(lambda fn=fn: fn(1), args.device, repeat=3))
            row[name] = 1e3 * (full - first) / (steps - 1)
        row["ours_fraction_of_bound"] = bound_ms / row["ours_ms"]
        row["speedup_vs_hf"] = row["hf_dynamic_ms"] / row["ours_ms"]
        result[f"b{batch}"] = row
    return result


# ----- part: reference ---------------------------------------------------------------------------------------


def part_reference(args: argparse.Namespace, model, tokenizer) -> dict:
    from endo_rl.core.batch import pack
    from endo_rl.reward.reference import reference_forward

    n = args.prompts * args.group
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(0, 150000, (n, args.max_new_tokens), generator=g).tolist()
    batch = pack(prompt_ids(args, tokenizer, n), responses, pad_id=0).to(args.device)
    kwargs = dict(
        input_ids=batch.input_ids_BT,
        attention_mask=batch.decoder_mask(),
        position_ids=batch.position_ids_BT,
        use_cache=False,
    )
    with torch.no_grad():
        bare = statistics.median(timed(lambda: model(**kwargs), args.device, repeat=5))
        ours = statistics.median(timed(lambda: reference_forward(model, batch, 1.0), args.device, repeat=5))
    return {
        "bare_forward_s": bare,
        "reference_forward_s": ours,
        "ratio": ours / bare,
        "tokens": int(batch.attention_mask_BT.sum()),
    }


# ----- parts: one GRPO step, ours and TRL's ------------------------------------------------------------------


def trainer_overrides(args, algo: str, steps: int, prompts_per_step: int, *extra: str) -> list[str]:
    """Our trainer's config on the benchmark's workload (shared with bench/realistic_step.py), plus `extra`."""
    return [
        f"output_dir={tempfile.mkdtemp()}",
        f"algo.name={algo}",
        f"algo.group_size={args.group}",
        f"reward.endogenous.level={'token' if algo == 'ppo' else 'sequence'}",
        # GRPO: KL as a k3 loss term, as TRL's beta does (no extra no-grad policy pass); PPO: KL in the reward
        f"algo.kl_mode={'reward' if algo == 'ppo' else 'loss'}",
        "algo.kl_coef=0.01",
        f"train.prompts_per_step={prompts_per_step}",
        f"train.micro_batch_size={args.micro_batch}",
        "train.lr=1e-6",
        f"train.max_steps={steps}",
        f"generation.max_new_tokens={args.max_new_tokens}",
        f"generation.batch_size={args.prompts * args.group}",
        "logging.wandb=false",
        "model.gradient_checkpointing=true",
        *extra,
    ]


def part_ours(args: argparse.Namespace, model, tokenizer, algo: str = "grpo") -> dict:
    """Our trainer's step; GRPO (sequence reward) or PPO (dense token rewards, value head, GAE)."""
    from endo_rl.core import config
    from endo_rl.rl.data import Prompt
    from endo_rl.rl.trainer import Trainer

    overrides = trainer_overrides(
        args, algo, args.warmup + args.steps, args.prompts * args.world, f"generation.backend={args.backend}"
    )
    cfg = config.load(None, overrides)
    n = args.prompts * args.world
    prompts = [
        Prompt(f"bench {i}", "", ids, None, None) for i, ids in enumerate(prompt_ids(args, tokenizer, n))
    ]
    trainer = Trainer(cfg, lm=model, tokenizer=tokenizer, prompts=prompts)
    steps = []
    for _ in range(args.warmup + args.steps):
        sync(args.device)
        metrics = trainer.train_step()
        sync(args.device)
        steps.append(metrics)
    result = summarize([m["step_time_s"] for m in steps[args.warmup :]], steps[args.warmup :], args)
    return {"algo": algo, "kl_mode": cfg.algo.kl_mode, **result}


def summarize(
    times: list[float], metrics: list[dict], args: argparse.Namespace, peak: float | None = None
) -> dict:
    """Median step, completion tokens/s and phase medians; `peak`: GiB recorded by the run (default: this
    process's peak so far)."""
    length = statistics.mean(m["response_length"] for m in metrics)
    step = statistics.median(times)
    out = {
        "step_s": step,
        "step_times_s": times,
        "mean_completion_tokens": length,
        "completion_tokens_per_s": args.prompts * args.world * args.group * length / step,
        "peak_gib": peak_gib(args.device) if peak is None else peak,
    }
    for phase in ("generate", "reference", "old_logprobs", "update"):
        key = f"time/{phase}_s"
        if key in metrics[0]:
            out[f"{phase}_s"] = statistics.median(m[key] for m in metrics)
    return out


def run_trl(
    args, model, tokenizer, reward, data, steps: int, per_device_batch: int, on_log=None, **config
) -> tuple:
    """TRL's GRPOTrainer for `steps` optimizer steps on `data`, each step timed (device synchronized);
    returns (seconds per step, TRL's log history). `on_log(times, history)` is called after each of TRL's
    logs (every step), with what is known so far. `config`: further GRPOConfig fields (e.g. gradient
    accumulation, generation kwargs). Shared by this script and bench/realistic_step.py."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    # TRL builds its KL reference from the policy's path: give it one holding these same random weights
    path = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    model.save_pretrained(path)
    model.config._name_or_path = str(path)
    targs = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=per_device_batch,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        learning_rate=1e-6,
        beta=0.01,
        bf16=args.device == "cuda",
        gradient_checkpointing=True,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=args.device == "cpu",
        shuffle_dataset=False,
        seed=0,
        model_init_kwargs={"dtype": model.dtype},
        **config,
    )
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync(args.device)
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync(args.device)
            times.append(time.perf_counter() - self.start)

        def on_log(self, targs, state, *a, **k):
            if on_log is not None:
                on_log(list(times), list(state.log_history))

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=targs,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.train()
    return times, trainer.state.log_history


def part_trl(args: argparse.Namespace, model, tokenizer) -> dict:
    import copy

    from datasets import Dataset

    from endo_rl.reward.reference import ReferenceModel
    from endo_rl.trl_adapter import EndogenousRewardFunc

    # the reward runs on a second frozen copy, as a TRL user would set it up; TRL keeps its own KL reference
    reward = EndogenousRewardFunc(
        ReferenceModel(copy.deepcopy(model), tokenizer, batch_size=args.prompts * args.group)
    )
    texts = [tokenizer.decode(ids) for ids in prompt_ids(args, tokenizer, args.prompts)]
    data = Dataset.from_dict({"prompt": texts * (args.warmup + args.steps + 1)})
    times, history = run_trl(
        args,
        model,
        tokenizer,
        reward,
        data,
        steps=args.warmup + args.steps,
        per_device_batch=args.prompts * args.group,
        generation_kwargs={"min_new_tokens": args.max_new_tokens},
    )
    logs = [h for h in history if "completions/mean_length" in h][args.warmup :]
    metrics = [{"response_length": h["completions/mean_length"]} for h in logs]
    return summarize(times[args.warmup :], metrics, args)


def part_ours_ppo(args: argparse.Namespace, model, tokenizer) -> dict:
    return part_ours(args, model, tokenizer, algo="ppo")


PARTS = {
    "decode": part_decode,
    "reference": part_reference,
    "ours": part_ours,
    "ours_ppo": part_ours_ppo,
    "trl": part_trl,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="all", choices=["all", *PARTS])
    p.add_argument(
        "--parts", default="decode,reference,ours,trl", help="with --part all: which parts, in order"
    )
    p.add_argument("--shape", default="7b", choices=list(SHAPES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokenizer", required=True, help="Qwen2.5 tokenizer directory")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step per process")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--backend", default="static", choices=["static", "hf"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--decode-batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--world", type=int, default=int(os.environ.get("WORLD_SIZE", "1")))
    p.add_argument("--out", default=None, help="write all results as JSON here")
    return p.parse_args(argv)


def table(results: dict) -> str:
    """The side-by-side table (markdown) of a results dict."""
    rows = [
        "| | step s (median) | completion tok/s | generate s | reference+reward s | old log-probs s | update s | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ours", "ours_ppo", "trl"):
        r = results.get(name)
        if not r or "step_s" not in r:
            continue
        label = f"endo_rl {r['algo'].upper()}" if "algo" in r else "TRL GRPOTrainer"
        cells = [
            f"{r[k]:.2f}" if k in r else "n/a"
            for k in ("generate_s", "reference_s", "old_logprobs_s", "update_s")
        ]
        rows.append(
            f"| {label} | {r['step_s']:.2f} | {r['completion_tokens_per_s']:.0f} | {' | '.join(cells)} | "
            f"{r['peak_gib']:.1f} |"
        )
    if "speedup" in results:
        rows.append(f"\nthroughput ratio endo_rl GRPO / TRL: **{results['speedup']:.2f}x**")
    return "\n".join(rows)


def run_part(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build_model(args)
    result = PARTS[args.part](args, model, tokenizer)
    result["device"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    return result


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--table":  # re-print a saved run's table
        print(table(json.loads(Path(sys.argv[2]).read_text())))
        return
    args = parse(argv)
    if args.part != "all":
        print("RESULT " + json.dumps(run_part(args)), flush=True)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    results = {"command": "python bench/grpo_step.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d")}
    for part in args.parts.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, *argv, "--part", part], capture_output=True, text=True
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"part {part} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            results[part] = {"error": proc.stderr[-1000:]}
            continue
        results[part] = json.loads(line.removeprefix("RESULT "))
        print(f"{part}: {json.dumps(results[part])}", flush=True)
        if args.out:  # after every part, so a run cut short keeps what it measured
            Path(args.out).write_text(json.dumps(results, indent=1))
    if "ours" in results and "trl" in results and "step_s" in results["ours"] and "step_s" in results["trl"]:
        results["speedup"] = (
            results["ours"]["completion_tokens_per_s"] / results["trl"]["completion_tokens_per_s"]
        )
        print(f"throughput ratio ours/TRL: {results['speedup']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
