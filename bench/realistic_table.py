"""Floors, the steady state of each part and the table of `bench/realistic_step.py` results (a saved run:
`realistic_step.py --table FILE`).

The floor of a step is computed from that step's own token counts and the two ceilings measured in the same run
(device copy bandwidth, bf16 matmul rate): decode is paced by the longest response at one weight read per token;
the reference, update (and PPO's old log-prob) passes by their matmul FLOPs.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_step as base  # noqa: E402  (model shapes)


def model_sizes(shape: str) -> dict:
    """Parameter counts of the layers (every token), the LM head (response tokens only) and the embedding."""
    s = base.SHAPES[shape]
    D, F, V, n = s["hidden_size"], s["intermediate_size"], s["vocab_size"], s["num_hidden_layers"]
    kv = D // s["num_attention_heads"] * s["num_key_value_heads"]
    layer = D * D + 2 * D * kv + (D + 2 * kv) + D * D + 3 * D * F + 2 * D  # q, k, v (+ biases), o, MLP, norms
    return {"layers": n * layer + D, "head": V * D, "embedding": V * D}


def floor_s(step: dict, sizes: dict, ceilings: dict, forwards: int) -> dict:
    """Decode: longest response x (layer + head bytes in bf16 / copy bandwidth). Passes: `forwards` forward
    equivalents (2 FLOP per parameter per token; head on response tokens only) at the measured matmul rate."""
    weight_read = 2 * (sizes["layers"] + sizes["head"]) / ceilings["copy_bytes_per_s"]
    forward = (2 * sizes["layers"] * step["tokens"] + 2 * sizes["head"] * step["response_tokens"]) / ceilings[
        "matmul_flops"
    ]
    decode = step["longest_response"] * weight_read
    return {"decode": decode, "passes": forwards * forward, "total": decode + forwards * forward}


# forward equivalents per step: reference 1, update 4 (forward, backward 2x, checkpointing recompute); PPO's
# old log-prob / value pass 1 more
FORWARDS = {"grpo": 5, "ppo": 6}


def analyse(results: dict, shape: str) -> dict:
    ceilings, sizes = results.get("ceilings"), model_sizes(shape)
    for name in ("ours", "ours_ppo"):
        r = results.get(name)
        if not r or "per_step" not in r or not ceilings:
            continue
        floors = [floor_s(s, sizes, ceilings, FORWARDS[r["algo"]]) for s in r["per_step"]]
        ratios = [t / f["total"] for t, f in zip(r["step_times_s"], floors)]
        decode_bound = [
            p["time/generate_s"] / f["decode"] for p, f in zip(r["phase_times"], floors) if f["decode"] > 0
        ]
        r["floor_s"] = statistics.median(f["total"] for f in floors)
        r["over_floor"] = statistics.median(ratios)
        r["generate_over_decode_floor"] = statistics.median(decode_bound) if decode_bound else float("nan")
        steps = r["per_step"]
        r["tokens_per_step"] = statistics.mean(s["tokens"] for s in steps)
        r["computed_per_step"] = statistics.mean(s["computed_tokens"] for s in steps)
        r["computed_row_order_per_step"] = statistics.mean(s["computed_tokens_row_order"] for s in steps)
        if all("computed_tokens_logprob" in s for s in steps):  # absent from runs before it was recorded
            r["computed_logprob_per_step"] = statistics.mean(s["computed_tokens_logprob"] for s in steps)
        if r.get(
            "pack_sequences"
        ):  # packed micro-batches compute no padding (per_step holds the padded count)
            r["computed_per_step"] = r["computed_logprob_per_step"] = r["tokens_per_step"]
        r["longest_mean"] = statistics.mean(s["longest_response"] for s in steps)
    if ceilings and "decode" in results and "ms_per_step" in results["decode"]:
        bound_ms = 1e3 * 2 * (sizes["layers"] + sizes["head"]) / ceilings["copy_bytes_per_s"]
        results["decode"]["bound_ms"] = bound_ms
        results["decode"]["fraction_of_bound"] = bound_ms / results["decode"]["ms_per_step"]
    ours, trl = results.get("ours", {}), results.get("trl", {})
    if "completion_tokens_per_s" in ours and "completion_tokens_per_s" in trl:
        results["speedup"] = ours["completion_tokens_per_s"] / trl["completion_tokens_per_s"]
    return results


def table(results: dict) -> str:
    head = (
        "| | step s | floor s | / floor | completion tok/s | mean / longest response | generate s | "
        "reference s | old log-probs s | update s | tokens computed / real (row-order batches) | "
        "no-grad passes computed / real | peak GiB | compiles after warm-up | generate vs decode floor |"
    )
    rows = [head, "|" + "---|" * 15]
    for name, label in (("ours", "endo_rl GRPO"), ("ours_ppo", "endo_rl PPO"), ("trl", "TRL GRPOTrainer")):
        r = results.get(name)
        if not r or "step_s" not in r:
            continue

        def f(key, fmt="{:.2f}", r=r):
            value = r.get(key)
            return "n/a" if value is None or value != value else fmt.format(value)  # nan: not recorded

        longest = (
            f("longest_mean", "{:.0f}")
            if name != "trl"
            else "{:.0f}".format(
                statistics.mean(x for x in r.get("longest_response", [0]) if x is not None)
                if r.get("longest_response")
                else 0
            )
        )
        padding = (
            f"{r['computed_per_step'] / r['tokens_per_step']:.2f} ({r['computed_row_order_per_step'] / r['tokens_per_step']:.2f})"
            if "tokens_per_step" in r
            else "n/a"
        )
        cells = [
            f("step_s"),
            f("floor_s"),
            f("over_floor", "{:.2f}x"),
            f("completion_tokens_per_s", "{:.0f}"),
            f"{r['mean_completion_tokens']:.0f} / {longest}",
            f("generate_s"),
            f("reference_s"),
            f("old_logprobs_s"),
            f("update_s"),
            padding,
            f"{r['computed_logprob_per_step'] / r['tokens_per_step']:.2f}"
            if "computed_logprob_per_step" in r
            else "n/a",
            f("peak_gib", "{:.1f}"),
            f("compiles_after_warmup", "{}"),
            f("generate_over_decode_floor", "{:.2f}x"),
        ]
        cut = f" (cut after {r['cut_after_steps']} steps)" if "cut_after_steps" in r else ""
        rows.append(f"| {label}{cut} | " + " | ".join(cells) + " |")
    if "speedup" in results:
        rows.append(f"\nthroughput ratio endo_rl GRPO / TRL: **{results['speedup']:.2f}x**")
    for name, label in (("ours", "GRPO"), ("ours_ppo", "PPO")):
        b = results.get(name, {}).get("bare_last_step")
        if b:
            rows.append(
                f"{label}, last step's tokens, bare model (bench/bare_passes.py): forward {b['bare_forward_s']:.2f} s "
                f"(our reference pass {b['ours_reference_s']:.2f} s), forward + backward {b['bare_update_s']:.2f} s "
                f"(our update {b['ours_update_s']:.2f} s)"
            )
    d = results.get("decode", {})
    if "fraction_of_bound" in d:
        rows.append(
            f"decode at batch {d['batch']} ({d['tokens']} tokens): {d['ms_per_step']:.2f} ms/step, bound "
            f"{d['bound_ms']:.2f} ms: {100 * d['fraction_of_bound']:.0f}% of the weight-read bound"
        )
    if len(d.get("by_attention", {})) > 1:  # side by side in one process, same prompts
        alone = d.get("attention_alone_ms", {})
        rows.append(
            "decode attention (whole step; one call alone at 1024 slots): "
            + ", ".join(
                f"{a} {ms:.2f} ms/step ({alone.get(a, float('nan')):.3f} ms)"
                for a, ms in d["by_attention"].items()
            )
        )
    return "\n".join(rows)


# ----- the steady state of a part (complete or cut short) ------------------------------------------------------


def summarize_ours(args, record: dict) -> dict:
    """The steady state of our part (the steps after the warm-up) from its step record, whole or cut short."""
    w = record["warmup"]
    times = record["step_times_s"][w:]
    if not times:
        raise ValueError(f"{len(record['step_times_s'])} steps recorded, none after the {w} warm-up steps")
    metrics = [
        {**p, "response_length": n} for p, n in zip(record["phase_times"][w:], record["response_length"][w:])
    ]
    peak = max(record["peak_gib_per_step"])  # over every step, warm-up included
    out = base.summarize(times, metrics, argparse.Namespace(**vars(args), world=1), peak)
    compiles = record["compiles_per_step"]
    start = compiles[w - 1] if w else record.get("compiles_before")
    return {
        **out,
        "algo": record["algo"],
        "per_step": record["per_step"][w:],
        "phase_times": record["phase_times"][w:],
        "compiles_per_step": compiles,
        "compiles_after_warmup": None if start is None else compiles[-1] - start,
        **({"pack_sequences": record["pack_sequences"]} if "pack_sequences" in record else {}),
    }


def trl_args(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with TRL's own step counts (--trl-steps, --trl-warmup) where given."""
    trl = {"steps": args.trl_steps, "warmup": args.trl_warmup}
    return argparse.Namespace(**{**vars(args), **{k: v for k, v in trl.items() if v is not None}})


def summarize_cut(results: dict, args: argparse.Namespace) -> None:
    """Each part cut short (by --part-timeout) gets the summary of the steps it finished, and `cut_after_steps`;
    one cut inside its warm-up gets `summary_error` instead (no row), so the other parts still make a table.
    Records from before a field was recorded: warm-up from the run's command, response length from the token
    counts, peak memory unknown (nan). `args`: the run's own arguments."""
    for part, r in results.items():
        if not isinstance(r, dict) or "partial" not in r or "step_s" in r:
            continue
        record = dict(r["partial"])
        if part == "trl":
            a = trl_args(args)
            record.setdefault("warmup", a.warmup)
            record.setdefault("peak_gib_per_log", [float("nan")])
            summarize = functools.partial(summarize_trl, a)
        else:
            record.setdefault("warmup", args.warmup)
            rollouts = args.prompts * args.group
            record.setdefault(
                "response_length", [s["response_tokens"] / rollouts for s in record["per_step"]]
            )
            record.setdefault("peak_gib_per_step", [float("nan")])
            summarize = functools.partial(summarize_ours, args)
        try:
            r.update(summarize(record), cut_after_steps=len(record["step_times_s"]))
        except ValueError as e:  # nothing measured after the warm-up
            r["summary_error"] = str(e)


def summarize_trl(args, record: dict) -> dict:
    """TRL's steady state (the steps after the warm-up) from its record, whole or cut short."""
    w = record["warmup"]
    times = record["step_times_s"][w:]
    logs = [h for h in record["log_history"] if "completions/mean_length" in h][w:]
    n = min(len(times), len(logs))  # the steps both timed and logged
    if n == 0:
        raise ValueError(
            f"{len(record['step_times_s'])} TRL steps recorded, none after the {w} warm-up steps"
        )
    metrics = [{"response_length": h["completions/mean_length"]} for h in logs[:n]]
    peak = max(record["peak_gib_per_log"])
    out = base.summarize(times[:n], metrics, argparse.Namespace(**vars(args), world=1), peak)
    out["longest_response"] = [h.get("completions/max_length") for h in logs[:n]]
    return out
