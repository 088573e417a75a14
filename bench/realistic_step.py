"""The realistic RL step, the benchmark of record: real MATH prompts, responses that end anywhere, vs TRL.

    python bench/realistic_step.py --tokenizer DIR --data TRAIN_JSONL --out r.json       # 7B-shaped, 1 GPU
    python bench/realistic_step.py --shape tiny --device cpu --tokenizer DIR --data F   # check on a CPU
    python bench/realistic_step.py --table r.json                                     # table of a saved run

Workload (identical for both sides): the first prompts of MATH train in the qwen25-math-cot template, 8 prompts
x 8 samples = 64 rollouts per step, at most 1024 new tokens, temperature 1. The model is random-init with
Qwen2.5-Math-7B's shape; a forward hook on its LM head sets the logit of the tokenizer's EOS to
log(p V) + s^2 / 2 (s = the std of that row's logits, p = --stop-p, default 1/256), so that a response ends
with probability about p per token (random logits are near-Gaussian: the softmax denominator is about
V exp(s^2/2)), mean length near 1/p. Both sides sample from the same hooked model and stop on that EOS.

Parts (each its own process, so peak memory is its own): `ceilings` (copy bandwidth, bf16 matmul rate),
`decode` (ms per decode step at batch 64 through our generator, vs the weight-read bound; each attention of
`--decode-attention`, default sdpa,gqa, timed in turn), `ours` / `ours_ppo` (our trainer's GRPO / PPO step;
per-step longest response, tokens computed incl. padding, compilations after warm-up; no-grad passes at
`--logprob-micro-batch`), `trl` (TRL's GRPOTrainer: same hook, prompts and 64 completions per step; the
endogenous reward from our batched adapter on a frozen copy), `decode_parts` (not in the default list: the decode
step split into parts, each timed alone, `decode_breakdown.py`). The floor of each step is computed from its own
token counts.

`--compile-layers` runs `ours` / `ours_ppo` with `model.compile_layers=true` (each decoder layer compiled in
place; the bare passes timed after the steps then run on the same compiled layers): an A/B is two runs,
`--parts ours` with and without it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_step as base  # noqa: E402  (shapes, model building, timing)
from bare_passes import bare_passes  # noqa: E402
from decode_breakdown import breakdown  # noqa: E402
from profile_step import profile_phases  # noqa: E402
from realistic_table import analyse, summarize_cut, summarize_ours, summarize_trl, table, trl_args  # noqa: E402
from stop_hook import stop_logit_hook  # noqa: E402

PARTS = ("ceilings", "decode", "ours", "ours_ppo", "trl")  # --parts default; also: decode_parts


def load_math_prompts(args: argparse.Namespace, tokenizer, n: int) -> list:
    from endo_rl.core import templates
    from endo_rl.core.jsonl import read_jsonl
    from endo_rl.rl.data import Prompt

    rows = [row for _, row in read_jsonl(Path(args.data))][:n]
    ids = [templates.prompt_ids("qwen25-math-cot", tokenizer, row["problem"]) for row in rows]
    return [Prompt(f"math {i}", r["problem"], p, None, None) for i, (r, p) in enumerate(zip(rows, ids))]


def save_partial(args, measured: dict) -> None:
    """What a part has measured so far, rewritten after every step (`--partial`): a part stopped by
    `--part-timeout` (or killed) still leaves its finished steps for the parent to keep."""
    if getattr(args, "partial", None):
        Path(args.partial).write_text(json.dumps(measured))


def compile_count() -> int:
    from torch._dynamo.utils import counters

    return counters["frames"]["total"]  # frames dynamo compiled so far (recompiles included)


# ----- parts ----------------------------------------------------------------------------------------------------


def part_ceilings(args, model, tokenizer) -> dict:
    """The two ceilings measured on this device: copy bandwidth (read + write) and the bf16 matmul rate."""
    if args.device != "cuda":  # only to check the script on a CPU: no meaningful floor there
        return {"copy_bytes_per_s": float("nan"), "matmul_flops": float("nan")}
    a = torch.randn(8192, 8192, device=args.device, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    seconds = statistics.median(base.timed(lambda: a @ b, args.device, repeat=10, warmup=3))
    return {"copy_bytes_per_s": base.copy_bandwidth(args.device), "matmul_flops": 2 * 8192**3 / seconds}


def decode_ms_per_step(args, model, prompts, attention: str) -> float:
    """(time for N tokens - time for 1) / (N - 1) at batch 64 through a warm generator with this attention."""
    from endo_rl.generation import static as static_decode
    from endo_rl.generation.generator import StaticDecoderGenerator
    from endo_rl.generation.sampling import SamplingConfig

    n = args.max_new_tokens
    generator = StaticDecoderGenerator(model, batch_size=64, attention=attention)
    generator.generate(prompts, SamplingConfig(n), [-1], 0)  # warm-up: compile, capture every window
    decoder = generator.decoders[64]
    width = -(-max(len(p) for p in prompts) // generator.prompt_bucket) * generator.prompt_bucket

    def run(tokens: int):
        static_decode.generate_rows(decoder, prompts, SamplingConfig(tokens), [-1], 0, width)

    full = statistics.median(base.timed(lambda: run(n), args.device, repeat=2, warmup=0))
    first = statistics.median(base.timed(lambda: run(1), args.device, repeat=3, warmup=0))
    return 1e3 * (full - first) / (n - 1)


def attention_ms(model, attention: str, device: str, slots: int = 1024, batch: int = 64) -> float:
    """One decode attention call alone (one layer, `slots` cache slots, 1/8 of them left padding), in ms. On CUDA
    the call is replayed from a CUDA graph, as the decoder runs it: the host work of a call (for "flex" the
    compiled function's guard checks) is not counted, only the kernels and one graph launch."""
    from endo_rl.generation.decode_attention import decode_attention
    from endo_rl.generation.static import capture_cuda_graph

    cfg = model.config
    dims = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads)
    dtype = next(model.parameters()).dtype
    q = torch.randn(batch, dims[0], 1, dims[2], device=device, dtype=dtype)
    k, v = (torch.randn(batch, dims[1], slots, dims[2], device=device, dtype=dtype) for _ in range(2))
    valid = torch.ones(batch, slots, dtype=torch.bool, device=device)
    valid[:, : slots // 8] = False

    def call():
        return decode_attention(q, k, v, valid, dims, attention)

    if device == "cuda":  # the decoder's way of running it
        call = capture_cuda_graph(call, warmup=3)[0].replay
    times = base.timed(call, device, repeat=50, warmup=5)
    return 1e3 * statistics.median(times)


def part_decode(args, model, tokenizer) -> dict:
    """Per decode step at batch 64, our generator kept warm, for each attention of `--decode-attention`
    (comma-separated "sdpa" / "gqa" / "flex") in turn on the same prompts, each with its own generator (freed before
    the next). `ms_per_step` is the first attention's; `by_attention` holds each."""
    from endo_rl.generation import decode_attention

    prompts = [p.prompt_ids for p in load_math_prompts(args, tokenizer, 64)]
    by_attention, alone = {}, {}
    for attention in args.decode_attention.split(","):
        by_attention[attention] = decode_ms_per_step(args, model, prompts, attention)
        alone[attention] = attention_ms(model, attention, args.device)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    first = next(iter(by_attention))
    return {
        "batch": 64,
        "tokens": args.max_new_tokens,
        "ms_per_step": by_attention[first],
        "attention": first,
        "by_attention": by_attention,
        "attention_alone_ms": alone,  # one call, one layer, batch 64, 1024 slots (CUDA: graph replay)
        "bmm_out_dtype_used": dict(decode_attention._OUT_DTYPE_OK),  # False: the float32 scores fell back
    }


def part_decode_parts(args, model, tokenizer) -> dict:
    """The decode step split into parts, each timed alone at batch 64 (`decode_breakdown.py`); without the stop
    hook, as `decode`, except `step_hooked_ms` (the whole step with it, what the realistic step decodes)."""
    prompts = [p.prompt_ids for p in load_math_prompts(args, tokenizer, 64)]
    hook = stop_logit_hook(args.stop_p, [tokenizer.eos_token_id])
    return breakdown(model, prompts, tokenizer.pad_token_id, args.max_new_tokens, args.device, hook)


def row_order_batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def step_shape(rollout, micro_batch: int, logprob_micro_batch: int) -> dict:
    """Token counts of one step's rollout: what the floor is computed from, and what padding cost: positions
    computed by the update's micro-batches of `micro_batch` rows (`computed_tokens`), by the no-grad passes'
    padding-aware ones of at most `logprob_micro_batch` rows (`computed_tokens_logprob`), and by row-order
    micro-batches of `micro_batch`."""
    from endo_rl.rl import rollout as rl

    lengths = rl.sequence_lengths(rollout.prompt_ids, rollout.response_ids)
    logprob_batches = rl.padding_aware_micro_batches(lengths, logprob_micro_batch)
    return {
        "longest_response": max(len(r) for r in rollout.response_ids),
        "response_tokens": sum(len(r) for r in rollout.response_ids),
        "tokens": sum(lengths),
        "computed_tokens": rl.computed_tokens(lengths, rl.micro_batches(lengths, micro_batch)),
        "computed_tokens_logprob": rl.computed_tokens(lengths, logprob_batches),
        "logprob_micro_batches": len(logprob_batches),
        "computed_tokens_row_order": rl.computed_tokens(
            lengths, row_order_batches(len(lengths), micro_batch)
        ),
    }


def phase_times(metrics: list[dict]) -> list[dict]:
    """Each step's `time/<phase>_s` entries."""
    return [{k: v for k, v in m.items() if k.startswith("time/")} for m in metrics]


def part_ours(args, model, tokenizer, algo: str = "grpo") -> dict:
    from endo_rl.core import config
    from endo_rl.rl.trainer import Trainer

    steps = args.warmup + args.steps
    profiled = 1 if args.profile else 0  # one more step, under the profiler, after the measured ones
    overrides = base.trainer_overrides(
        args,
        algo,
        steps + profiled,
        args.prompts,
        f"train.logprob_micro_batch_size={args.logprob_micro_batch}",
        f"model.compile_layers={str(args.compile_layers).lower()}",
        f"generation.compact_min_rows={args.compact_min_rows}",
        f"train.pack_sequences={str(args.pack_sequences).lower()}",
    )
    cfg = config.load(None, overrides)
    model.get_output_embeddings().register_forward_hook(
        stop_logit_hook(args.stop_p, [tokenizer.eos_token_id])
    )
    prompts = load_math_prompts(args, tokenizer, args.prompts * (steps + profiled))
    trainer = Trainer(cfg, lm=model, tokenizer=tokenizer, prompts=prompts)
    shapes: list[dict] = []
    collect = trainer.collect

    def recording_collect(policy, step_prompts):  # reads the rollout's token counts; changes nothing
        rollout = collect(policy, step_prompts)
        shapes.append(step_shape(rollout, args.micro_batch, args.logprob_micro_batch))
        last["rollout"] = rollout
        return rollout

    last: dict = {}

    trainer.collect = recording_collect
    metrics, compiles, peaks = [], [], []
    before = compile_count()  # the baseline of a run with no warm-up step
    for _ in range(steps):
        metrics.append(trainer.train_step())
        compiles.append(compile_count())
        peaks.append(base.peak_gib(args.device))
        record = {
            "algo": algo,
            "warmup": args.warmup,
            "step_times_s": [m["step_time_s"] for m in metrics],
            "phase_times": phase_times(metrics),
            "response_length": [m["response_length"] for m in metrics],
            "per_step": list(shapes),  # a copy: the profiled step after these appends to `shapes` too
            "compiles_per_step": compiles,
            "compiles_before": before,
            "peak_gib_per_step": peaks,
            "pack_sequences": args.pack_sequences,
        }
        save_partial(args, record)
    rollout, phases = last["rollout"], metrics[-1]
    bare = bare_passes(
        model,
        rollout.prompt_ids,
        rollout.response_ids,
        trainer.pad_id,
        args.logprob_micro_batch,
        args.micro_batch,
    )
    bare.update(ours_reference_s=phases["time/reference_s"], ours_update_s=phases["time/update_s"])
    extra = {}
    if profiled:  # generation unrecorded: its decode kernels would take the profiler minutes to hand over
        paused = [(trainer.generator, "generate")]
        extra["profile_extra_step"] = profile_phases(
            trainer.train_step, args.device, paused=paused, trace=args.profile_trace, stack=args.profile_stack
        )
    if args.device == "cuda":  # cudaMalloc retries: the caching allocator freeing memory under pressure
        extra["alloc_retries"] = torch.cuda.memory_stats().get("num_alloc_retries")
    return {
        **extra,
        "compile_layers": args.compile_layers,
        "compact_min_rows": args.compact_min_rows,
        "pack_sequences": args.pack_sequences,
        **summarize_ours(args, record),
        "bare_last_step": bare,
    }


def part_ours_ppo(args, model, tokenizer) -> dict:
    steps = args.steps if args.ppo_steps is None else args.ppo_steps
    return part_ours(argparse.Namespace(**{**vars(args), "steps": steps}), model, tokenizer, algo="ppo")


def part_trl(args, model, tokenizer) -> dict:
    """TRL's GRPOTrainer: 8 prompts x 8 generations per optimizer step (per-device batch 8 x 8 accumulation)."""
    import copy

    from datasets import Dataset

    from endo_rl.reward.reference import ReferenceModel
    from endo_rl.trl_adapter import EndogenousRewardFunc

    args = trl_args(args)
    steps = args.warmup + args.steps
    reward = EndogenousRewardFunc(
        ReferenceModel(copy.deepcopy(model), tokenizer, batch_size=args.micro_batch)
    )
    model.get_output_embeddings().register_forward_hook(
        stop_logit_hook(args.stop_p, [tokenizer.eos_token_id])
    )
    texts = [tokenizer.decode(p.prompt_ids) for p in load_math_prompts(args, tokenizer, args.prompts * steps)]
    peaks: list[float] = []

    def on_log(times, history):
        peaks.append(base.peak_gib(args.device))
        save_partial(args, trl_record(args, times, history, peaks))

    times, history = base.run_trl(
        args,
        model,
        tokenizer,
        reward,
        Dataset.from_dict({"prompt": texts}),
        steps=steps,
        per_device_batch=args.micro_batch,
        on_log=on_log,
        gradient_accumulation_steps=args.prompts * args.group // args.micro_batch,
    )
    peaks.append(base.peak_gib(args.device))
    return summarize_trl(args, trl_record(args, times, history, peaks))


def trl_record(args, times: list[float], history: list[dict], peaks: list[float]) -> dict:
    return {"warmup": args.warmup, "step_times_s": times, "log_history": history, "peak_gib_per_log": peaks}


PART_FNS = {
    "ceilings": part_ceilings,
    "decode": part_decode,
    "decode_parts": part_decode_parts,
    "ours": part_ours,
    "ours_ppo": part_ours_ppo,
    "trl": part_trl,
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="all", choices=["all", *PART_FNS])
    p.add_argument("--parts", default=",".join(PARTS), help="with --part all: which parts, in order")
    p.add_argument("--shape", default="7b", choices=list(base.SHAPES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokenizer", required=True, help="Qwen2.5 tokenizer directory")
    p.add_argument("--data", required=True, help="MATH train.jsonl")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument(
        "--logprob-micro-batch",
        type=int,
        default=32,
        help="ours: micro-batch of the no-grad passes (reference, old)",
    )
    p.add_argument(
        "--compile-layers",
        action="store_true",
        help="ours: model.compile_layers=true (each decoder layer torch.compiled; the bare passes of the "
        "same model then run compiled too)",
    )
    p.add_argument(
        "--compact-min-rows",
        type=int,
        default=8,
        help="ours: generation.compact_min_rows (finished rows dropped down to this many; 0: every row decodes "
        "to the end of the call, as up to run 5)",
    )
    p.add_argument(
        "--pack-sequences",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ours: train.pack_sequences (default on, as the config's default: reference, old-log-prob and "
        "update passes on packed micro-batches with varlen attention; the bare passes stay padded; "
        "--no-pack-sequences: right-padded, as up to run 5)",
    )
    p.add_argument("--stop-p", type=float, default=1 / 256)
    p.add_argument(
        "--decode-attention", default="sdpa,gqa", help="decode part: attentions to time, first one reported"
    )
    p.add_argument("--steps", type=int, default=10, help="measured steps after warm-up")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--trl-steps", type=int, default=None, help="TRL's measured steps (default --steps)")
    p.add_argument("--trl-warmup", type=int, default=None, help="TRL's warm-up steps (default --warmup)")
    p.add_argument("--ppo-steps", type=int, default=None, help="our PPO's measured steps (default --steps)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="ours: one more step under torch.profiler, kernel time by phase and category (profile_step.py)",
    )
    p.add_argument(
        "--profile-trace",
        default=None,
        help="with --profile: also write that step's timeline here (Chrome trace; .json.gz to compress)",
    )
    p.add_argument(
        "--profile-stack",
        action="store_true",
        help="with --profile: record Python stacks, so idle gaps are charged to lines of endo_rl/ and bench/",
    )
    p.add_argument("--out", default=None)
    p.add_argument(
        "--part-timeout",
        type=float,
        default=None,
        help="seconds per part; a part cut by it keeps the steps it finished (under 'partial')",
    )
    p.add_argument("--partial", default=None, help=argparse.SUPPRESS)  # set by the parent for each part
    return p.parse_args(argv)


def run_part(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = base.build_model(args)
    result = PART_FNS[args.part](args, model, tokenizer)
    result["device"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    return result


def run_part_process(argv: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    """This script on one part in a child process; on timeout the child is killed and returncode is None."""
    try:
        return subprocess.run(
            [sys.executable, __file__, *argv], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:  # its output so far comes as bytes (or None)
        out, err = (x.decode(errors="replace") if x else "" for x in (e.stdout, e.stderr))
        return subprocess.CompletedProcess(e.cmd, None, out, err)


def main(argv=None) -> None:
    if argv is None and len(sys.argv) >= 3 and sys.argv[1] == "--table":  # merge saved runs, print the table
        results: dict = {}
        for path in sys.argv[2:]:
            results.update({k: v for k, v in json.loads(Path(path).read_text()).items() if k not in results})
        summarize_cut(results, parse(results["command"].split()[2:]))
        print(table(analyse(results, results.get("shape", "7b"))))
        return
    args = parse(argv)
    if args.part != "all":
        print("RESULT " + json.dumps(run_part(args)), flush=True)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    results = {
        "command": "python bench/realistic_step.py " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
    }
    results["shape"] = args.shape
    for part in args.parts.split(","):
        start = time.time()
        partial = Path(tempfile.mkdtemp()) / f"{part}.json"
        proc = run_part_process([*argv, "--part", part, "--partial", str(partial)], args.part_timeout)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            why = "timed out" if proc.returncode is None else f"exit {proc.returncode}"
            print(f"part {part} failed ({why}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            results[part] = {"error": f"{why}: {proc.stderr[-2000:]}", "wall_s": time.time() - start}
            if partial.exists():  # the steps it finished before it stopped
                results[part]["partial"] = json.loads(partial.read_text())
        else:
            results[part] = json.loads(line.removeprefix("RESULT "))
            results[part]["wall_s"] = time.time() - start
            print(f"{part}: {json.dumps(results[part])[:1500]}", flush=True)
        if args.out:  # after every part, so a run cut short keeps what it measured
            Path(args.out).write_text(json.dumps(results, indent=1))
    summarize_cut(results, args)
    print(table(analyse(results, args.shape)))


if __name__ == "__main__":
    main()
