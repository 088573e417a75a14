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


def test_busy_time_is_the_union_of_intervals_and_long_gaps_are_idle():
    from profile_step import busy_and_idle

    # [0, 100] holds a nested [10, 20]; then a 50 us gap; [150, 300] and an overlapping [250, 400]; a 2 ms gap
    out = busy_and_idle([(150, 300), (0, 100), (10, 20), (250, 400), (2400, 2500)])
    assert out["busy_s"] == (100 + 250 + 100) / 1e6
    assert out["idle_gaps"] == [1, 2000 / 1e6]  # the 50 us gap is under the 1 ms threshold
    assert busy_and_idle([]) == {"busy_s": 0.0, "idle_gaps": [0, 0.0]}


def test_a_phase_that_waits_shows_the_wait_as_idle_and_the_trace_is_written(tmp_path):
    import time

    a = torch.randn(256, 256)

    def step():
        with torch.profiler.record_function("phase/update"):
            a @ a  # noqa: B018
            time.sleep(0.05)  # the host busy elsewhere: no op runs
            a @ a  # noqa: B018

    out = profile_phases(step, "cpu", trace=str(tmp_path / "trace.json"))["update"]
    assert out["idle_gaps"][0] == 1 and out["idle_gaps"][1] >= 0.05
    assert out["busy_s"] <= out["wall_s"] - 0.05
    assert '"phase/update"' in (tmp_path / "trace.json").read_text()


def test_idle_gaps_are_sized_and_charged_to_the_host_op_running_in_them():
    from profile_step import idle_by_host_op

    kernels = [(0, 100), (150, 300), (2300, 2400)]
    host = [
        (-60, 10, "aten::copy_"),  # running through the gap before the first kernel
        (110, 145, "aten::to"),
        (120, 130, "cudaMemcpyAsync"),  # a runtime call: named with the op that made it
        (200, 400, "aten::item"),  # ended before the long gap's midpoint: nothing runs then
        (2350, 2600, "aten::mm"),
    ]
    out = idle_by_host_op(kernels, host, window=(-50, 2500))
    assert out["gaps_by_size"] == {
        "<10us": [0, 0.0],
        "10-100us": [2, 100 / 1e6],
        "0.1-1ms": [1, 100 / 1e6],
        ">1ms": [1, 2000 / 1e6],
    }
    assert out["idle_by_host_op"] == [
        [0.002, 1, "after aten::item"],
        [0.0001, 1, "aten::mm"],
        [5e-05, 1, "aten::copy_"],
        [5e-05, 1, "aten::to > cudaMemcpyAsync"],
    ]
    short = idle_by_host_op([(0, 10), (15, 20)], [(0, 20, "aten::add")])
    assert short["gaps_by_size"]["<10us"] == [1, 5 / 1e6] and short["idle_by_host_op"] == []  # not charged
    assert idle_by_host_op([], [], window=(0, 50))["idle_by_host_op"] == [[5e-05, 1, "(no host op)"]]
    # with stacks, the innermost frame of endo_rl/ or bench/ in progress is named with the op
    frames = [(0, 100, "endo_rl/rl/update.py(80): __call__"), (40, 60, "aten::item")]
    assert idle_by_host_op([(0, 10), (90, 100)], frames)["idle_by_host_op"] == [
        [8e-05, 1, "aten::item @ endo_rl/rl/update.py(80): __call__"]
    ]


def test_a_profiled_phase_charges_its_idle_time_to_the_host():
    import time

    a = torch.randn(256, 256)

    def step():
        with torch.profiler.record_function("phase/update"):
            a @ a  # noqa: B018
            time.sleep(0.05)
            a @ a  # noqa: B018

    out = profile_phases(step, "cpu")["update"]
    seconds, gaps, label = out["idle_by_host_op"][0]
    assert seconds >= 0.05 and label == "after aten::matmul"
    # with stacks, Python's own calls are host ops too: the sleep is what ran, inside this test's frame
    seconds, gaps, label = profile_phases(step, "cpu", stack=True)["update"]["idle_by_host_op"][0]
    assert seconds >= 0.05 and label.startswith("<built-in function sleep>")
    assert out["gaps_by_size"][">1ms"][0] >= 1


def test_kernel_names_fall_in_their_categories():
    from profile_step import category

    assert (
        category("fmha_cutlassB_bf16_aligned_128x128_k128_sm80(PyTorchMemEffAttention::...)") == "attention"
    )
    assert category("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>") == "attention"
    assert category("cudnn_generated_fort_native_sdpa_sm80_flash_fprop_wmma_f16") == "attention"
    assert category("nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopA_NTN") == "matmul"
    assert category("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16>") == "matmul"
    assert category("void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add>") == "other"
