"""bench/profile_step.py: a profiled step's op time is split by the trainer's phase ranges and by category."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from profile_step import profile_phases  # noqa: E402


def test_op_time_lands_in_the_phase_whose_range_holds_it():
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def step():
        with torch.profiler.record_function("phase/update"):
            for _ in range(20):
                a @ b  # noqa: B018  (timed, not used)
        (a * b).sum()  # outside every phase
        with torch.profiler.record_function("phase/generate"):
            torch.softmax(a, -1)

    out = profile_phases(step, "cpu")
    assert list(out) == ["update", "generate", "between"]
    update, generate, between = out["update"], out["generate"], out["between"]
    assert update["top"][0][1:3] == [20, "matmul"] and update["top"][0][3].startswith("aten::")
    assert update["by_category"]["matmul"] > 0 and "softmax" not in update["by_category"]
    assert "softmax" in generate["by_category"] and "matmul" not in generate["by_category"]
    assert any(name == "aten::mul" for *_, name in between["top"]) and between["wall_s"] is None
    for phase in (update, generate):
        assert 0 < phase["kernel_s"] <= phase["wall_s"]


def test_a_paused_method_is_not_recorded_and_is_restored_after():
    a = torch.randn(128, 128)

    class Generator:
        def generate(self):
            return torch.softmax(a, -1)

    gen = Generator()

    def step():
        with torch.profiler.record_function("phase/generate"):
            gen.generate()
            a @ a  # noqa: B018  (recorded: outside the paused call)

    out = profile_phases(step, "cpu", paused=[(gen, "generate")])
    assert "softmax" not in out["generate"]["by_category"] and "matmul" in out["generate"]["by_category"]
    assert "generate" not in vars(gen)  # the class's method again
    assert "softmax" in profile_phases(step, "cpu")["generate"]["by_category"]
