"""Where one trainer step's device time goes: kernel time by phase (generate, reference, old_logprobs, update)
and by kernel category, from one torch.profiler run of the step.

The trainer marks each phase as a profiler range `phase/<name>` (`Trainer._timed`, which synchronizes the
device at both ends), so a kernel belongs to the phase whose range holds its start. Work outside every phase
(reward composition, advantages, metrics) is reported as `between`. On a CPU the "kernels" are the ops' own
(self) CPU time. Used by `realistic_step.py --profile` (one extra step after the measured ones) and by
`profile_forward.py` (one forward, no phases: all of it `between`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from torch.autograd import DeviceType

CATEGORIES = (  # first match wins; kernel names of cuBLAS/cuBLASLt, CUTLASS, SDPA's backends, Triton
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "matmul", "addmm", "aten::mm", "aten::bmm")),
    ("attention", ("fmha", "flash", "attention", "efficient")),
    ("softmax", ("softmax",)),  # the LM head's log-softmax over the vocabulary, SDPA's math fallback
    ("copy", ("memcpy", "memset")),
)


def category(name: str) -> str:
    low = name.lower()
    return next((cat for cat, keys in CATEGORIES if any(k in low for k in keys)), "other")


def profile_phases(run_step, device: str, top: int = 8, paused: tuple = (), trace: str | None = None) -> dict:
    """Run `run_step()` once under torch.profiler; return `phase_breakdown` of what it recorded. `paused`:
    (object, method name) pairs whose calls are not recorded, e.g. the generator's `generate`, whose
    ~10^6 decode kernels would take the profiler minutes to hand over (its cost: the decode part). `trace`: also
    write the timeline there (Chrome trace JSON, gzipped when the name ends in .gz; view in Perfetto)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof, _unrecorded(prof, activities, paused):
        run_step()
        if device == "cuda":
            torch.cuda.synchronize()
    if trace:
        prof.export_chrome_trace(trace)
    return phase_breakdown(prof.events(), device, top)


@contextlib.contextmanager
def _unrecorded(prof, activities, methods):
    """Within the block, calls of each (object, name) method run with the profiler's collection off."""

    def wrap(fn):
        def unrecorded(*args, **kwargs):
            prof.toggle_collection_dynamic(False, activities)
            try:
                return fn(*args, **kwargs)
            finally:
                prof.toggle_collection_dynamic(True, activities)

        return unrecorded

    shadowed = []
    for obj, name in methods:
        shadowed.append((obj, name, name in vars(obj), getattr(obj, name)))
        setattr(obj, name, wrap(getattr(obj, name)))
    try:
        yield
    finally:
        for obj, name, own, fn in reversed(shadowed):
            setattr(obj, name, fn) if own else delattr(obj, name)


def busy_and_idle(intervals: list[tuple[float, float]], gap_us: float = 1000.0) -> dict:
    """The union of (start, end) intervals in microseconds (`busy_s`: time something ran; overlapping and nested
    intervals count once), and the gaps longer than `gap_us` between them (`idle_gaps`: [count, seconds])."""
    busy = idle = 0.0
    gaps, run = 0, None
    for start, end in sorted(intervals):
        if run is not None and start <= run[1]:
            run[1] = max(run[1], end)
            continue
        if run is not None:
            busy += run[1] - run[0]
            if start - run[1] > gap_us:
                gaps, idle = gaps + 1, idle + start - run[1]
        run = [start, end]
    if run is not None:
        busy += run[1] - run[0]
    return {"busy_s": busy / 1e6, "idle_gaps": [gaps, idle / 1e6]}


def phase_breakdown(events, device: str, top: int = 8) -> dict:
    """{phase: {wall_s, kernel_s, busy_s, idle_gaps, by_category: {category: s}, top: [[ms, count, category,
    name], ...]}}. busy_s: how long any kernel ran (the union of their intervals); idle_gaps: [count, seconds]
    of the gaps over 1 ms between kernels, when the device waited for the host."""
    ranges = sorted(
        (e.time_range.start, e.time_range.end, e.name.removeprefix("phase/"))
        for e in events
        if e.name.startswith("phase/")
    )
    kind = DeviceType.CUDA if device == "cuda" else DeviceType.CPU
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.device_type != kind or e.name.startswith("phase/"):
            continue
        phase = next((name for start, end, name in ranges if start <= e.time_range.start < end), "between")
        us = e.time_range.elapsed_us() if kind == DeviceType.CUDA else e.self_cpu_time_total
        seconds[phase][e.name] += us / 1e6
        counts[phase][e.name] += 1
        intervals[phase].append((e.time_range.start, e.time_range.end))
    out = {}
    for phase in [name for *_, name in ranges] + (["between"] if "between" in seconds else []):
        by_name = seconds.get(phase, {})
        by_category: dict[str, float] = defaultdict(float)
        for name, s in by_name.items():
            by_category[category(name)] += s
        wall = next(((end - start) / 1e6 for start, end, name in ranges if name == phase), None)
        out[phase] = {
            "wall_s": wall,
            "kernel_s": sum(by_name.values()),
            **busy_and_idle(intervals.get(phase, [])),
            "by_category": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
            "top": [
                [round(1e3 * s, 3), counts[phase][name], category(name), name[:120]]
                for name, s in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
            ],
        }
    return out
