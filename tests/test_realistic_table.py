"""bench/realistic_table.py: a part cut short by its time limit is summarized from the steps it finished."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from realistic_step import parse  # noqa: E402
from realistic_table import analyse, summarize_cut, table  # noqa: E402

COMMAND = "python bench/realistic_step.py --tokenizer T --data D --warmup 1 --trl-warmup 2 --parts ours,trl"


def step_shape(response_tokens: int) -> dict:
    return {
        "longest_response": 300,
        "response_tokens": response_tokens,
        "tokens": response_tokens + 64 * 90,
        "computed_tokens": response_tokens + 64 * 100,
        "computed_tokens_logprob": response_tokens + 64 * 110,
        "logprob_micro_batches": 4,
        "computed_tokens_row_order": 2 * response_tokens,
    }


def ours_record(times: list[float]) -> dict:
    n = len(times)
    return {
        "algo": "grpo",
        "warmup": 1,
        "step_times_s": times,
        "phase_times": [
            {"time/generate_s": t / 2, "time/reference_s": 1.0, "time/update_s": t / 2 - 1} for t in times
        ],
        "response_length": [100.0 + i for i in range(n)],
        "per_step": [step_shape(64 * (100 + i)) for i in range(n)],
        "compiles_per_step": [4] + [5] * (n - 1),
        "compiles_before": 0,
        "peak_gib_per_step": [10.0, 12.5] + [11.0] * (n - 2),
    }


def test_a_cut_part_is_summarized_from_its_steps_after_the_warm_up():
    trl_logs = [{"completions/mean_length": 200.0, "completions/max_length": 512}] * 3
    results = {
        "command": COMMAND,
        "ours": {"error": "timed out", "partial": ours_record([30.0, 10.0, 14.0, 12.0])},
        "trl": {
            "error": "timed out",
            "partial": {
                "warmup": 2,
                "step_times_s": [90.0, 50.0, 40.0],
                "log_history": [{"loss": 1.0}, *trl_logs],  # a log without lengths is not a step
                "peak_gib_per_log": [70.0, 80.0, 75.0],
            },
        },
    }
    summarize_cut(results, parse(COMMAND.split()[2:]))
    ours, trl = results["ours"], results["trl"]
    assert ours["cut_after_steps"] == 4 and ours["step_times_s"] == [10.0, 14.0, 12.0]
    assert ours["step_s"] == 12.0 and ours["mean_completion_tokens"] == statistics.mean([101.0, 102.0, 103.0])
    assert ours["peak_gib"] == 12.5 and ours["compiles_after_warmup"] == 1  # the compile of step 2
    assert ours["reference_s"] == 1.0 and len(ours["per_step"]) == 3
    assert trl["step_times_s"] == [40.0] and trl["peak_gib"] == 80.0 and trl["cut_after_steps"] == 3
    assert results["ours"]["completion_tokens_per_s"] == pytest.approx(
        64 * ours["mean_completion_tokens"] / 12.0
    )
    rows = table(analyse(results, "7b")).splitlines()
    assert rows[2].startswith("| endo_rl GRPO (cut after 4 steps) | 12.00 |")
    assert rows[3].startswith("| TRL GRPOTrainer (cut after 3 steps) | 40.00 |")


def test_a_record_from_before_peak_memory_was_kept_shows_it_as_unknown():
    record = ours_record([30.0, 10.0])
    del record["peak_gib_per_step"], record["warmup"], record["response_length"]
    results = {"command": COMMAND, "ours": {"error": "timed out", "partial": record}}
    summarize_cut(results, parse(COMMAND.split()[2:]))
    assert results["ours"]["step_s"] == 10.0 and results["ours"]["mean_completion_tokens"] == 101.0
    assert "| n/a | 1 |" in table(analyse(results, "7b"))  # peak GiB not recorded, compiles after warm-up


def test_a_part_cut_inside_its_warm_up_is_reported_and_leaves_the_other_rows():
    results = {
        "command": COMMAND,
        "ours": {"error": "timed out", "partial": ours_record([30.0])},
        "ours_ppo": {"error": "timed out", "partial": {**ours_record([30.0, 11.0]), "algo": "ppo"}},
    }
    summarize_cut(results, parse(COMMAND.split()[2:]))
    assert results["ours"]["summary_error"] == "1 steps recorded, none after the 1 warm-up steps"
    rows = table(analyse(results, "7b")).splitlines()
    assert len(rows) == 3 and rows[2].startswith("| endo_rl PPO (cut after 2 steps) | 11.00 |")


@pytest.mark.parametrize("packed, expected", [(False, "1.05"), (True, "1.00")])
def test_a_packed_run_computes_its_real_tokens(packed, expected):
    """per_step holds the padded micro-batches' count either way; a packed run's passes compute no padding."""
    record = ours_record([30.0, 10.0, 10.0])
    record["pack_sequences"] = packed
    results = {"command": COMMAND, "ours": {"error": "timed out", "partial": record}}
    summarize_cut(results, parse(COMMAND.split()[2:]))
    results["ceilings"] = {"copy_bytes_per_s": 4.1e12, "matmul_flops": 7.8e14}
    r = analyse(results, "7b")["ours"]
    assert f"{r['computed_per_step'] / r['tokens_per_step']:.2f}" == expected
