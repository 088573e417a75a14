"""Compare the step-N checkpoints of an uninterrupted run (A) and a killed-and-resumed run (B).

    python bench/compare_runs.py RUN_A RUN_B K N

Prints, over the trainable tensors (LoRA adapters and the value head; all tensors when there is no adapter):
max |B_N - A_N|, and for scale max |A_N - A_K| (what the resumed steps changed), plus the per-step metrics of
every step both runs logged, side by side, each step marked identical when every logged value but the timings
is equal (printed also when a step-N checkpoint is missing, e.g. a run cut before its end). bf16 tolerance: the
difference must be small against the update; sampled rollouts after a resume see the same RNG state, so only
kernel non-determinism separates the two runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors import safe_open


def tensors(ckpt: Path) -> dict:
    out = {}
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        trainable = [k for k in keys if "lora_" in k or "value_head" in k] or keys
        for k in trainable:
            out[k] = f.get_tensor(k).float()
    return out


def number(value) -> str:
    """A metric as printed: None where the step had nothing to log (e.g. no token left to train on)."""
    return f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def metrics(run: Path, after: int) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) > after]


def main() -> None:
    run_a, run_b, k, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    a_n, b_n = run_a / "checkpoints" / f"step-{n}", run_b / "checkpoints" / f"step-{n}"
    missing = [p for p in (a_n, b_n) if not (p / "trainer_state.json").is_file()]
    if missing:  # the weights cannot be compared; the logged steps still can
        print(f"{run_a.name} vs {run_b.name}: no complete checkpoint {', '.join(map(str, missing))}")
    else:
        compare_weights(run_a, run_b, a_n, b_n, k, n)
    compare_metrics(metrics(run_a, 0), metrics(run_b, 0))


def compare_weights(run_a: Path, run_b: Path, a_n: Path, b_n: Path, k: int, n: int) -> None:
    a_k = run_a / "checkpoints" / f"step-{k}"
    ta, tb = tensors(a_n), tensors(b_n)
    diff = max((ta[key] - tb[key]).abs().max().item() for key in ta)
    scale = max(v.abs().max().item() for v in ta.values())
    line = f"{run_a.name} vs {run_b.name} at step {n}: {len(ta)} trainable tensors, max|B-A| = {diff:.3e}"
    line += f", max|A| = {scale:.3e}"
    if (a_k / "trainer_state.json").is_file():
        tk = tensors(a_k)
        update = max((ta[key] - tk[key]).abs().max().item() for key in ta)
        line += f", max|A_{n} - A_{k}| (update over the resumed steps) = {update:.3e}"
    print(line)


def compare_metrics(ma: list[dict], mb: list[dict]) -> None:
    """Per step logged by both: 'identical' when every logged value except timings is equal, then a few."""
    by_step = {r.get("step"): r for r in mb}
    for ra in ma:
        rb = by_step.get(ra.get("step"))
        if rb is None:
            continue
        values = [
            key for key in ra if not key.startswith("time/") and key not in ("step_time_s", "tokens_per_s")
        ]
        same = "identical" if all(ra[key] == rb.get(key) for key in values) else "DIFFERENT"
        keys = ["loss", "reward/total", "kl", "response_length", "grad_norm"]
        keys += sorted(key for key in ra if key.startswith("time/"))
        cells = [f"{key} {number(ra[key])} / {number(rb.get(key))}" for key in keys if key in ra]
        print(f"  step {ra.get('step')}: {same} ({len(values)} values); A / B  " + ", ".join(cells))


if __name__ == "__main__":
    main()
