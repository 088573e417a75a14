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
import heapq
from collections import defaultdict

import torch
from torch.autograd import DeviceType

CATEGORIES = (  # first match wins; kernel names of cuBLAS/cuBLASLt, CUTLASS, SDPA's backends, Triton
    # attention first: SDPA's memory-efficient kernels are CUTLASS ones ("fmha_cutlassF...")
    ("attention", ("fmha", "flash", "attention", "efficient")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "matmul", "addmm", "aten::mm", "aten::bmm")),
    ("softmax", ("softmax",)),  # the LM head's log-softmax over the vocabulary, SDPA's math fallback
    ("copy", ("memcpy", "memset")),
)


def category(name: str) -> str:
    low = name.lower()
    return next((cat for cat, keys in CATEGORIES if any(k in low for k in keys)), "other")


def profile_phases(
    run_step, device: str, top: int = 8, paused: tuple = (), trace: str | None = None, stack: bool = False
) -> dict:
    """Run `run_step()` once under torch.profiler; return `phase_breakdown` of what it recorded. `paused`:
    (object, method name) pairs whose calls are not recorded, e.g. the generator's `generate`, whose
    ~10^6 decode kernels would take the profiler minutes to hand over (its cost: the decode part). `trace`: also
    write the timeline there (Chrome trace JSON, gzipped when the name ends in .gz; view in Perfetto). `stack`:
    record each op's Python stack, so an idle gap is charged to the line of endo_rl/ or bench/ that led to it
    (more host overhead while profiling)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with (
        torch.profiler.profile(activities=activities, with_stack=stack) as prof,
        _unrecorded(prof, activities, paused),
    ):
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
    runs = merged(intervals)
    gaps = [b[0] - a[1] for a, b in zip(runs, runs[1:]) if b[0] - a[1] > gap_us]
    return {
        "busy_s": sum(end - start for start, end in runs) / 1e6,
        "idle_gaps": [len(gaps), sum(gaps) / 1e6],
    }


GAP_SIZES = ((10.0, "<10us"), (100.0, "10-100us"), (1000.0, "0.1-1ms"), (float("inf"), ">1ms"))


def merged(intervals: list[tuple[float, float]]) -> list[list[float]]:
    """The union of (start, end) intervals as sorted, disjoint [start, end] runs."""
    runs: list[list[float]] = []
    for start, end in sorted(intervals):
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return runs


def idle_by_host_op(
    kernels: list[tuple[float, float]],
    host_ops: list[tuple[float, float, str]],
    window: tuple[float, float] | None = None,
    top: int = 12,
) -> dict:
    """What the host was doing while the device idled, in microseconds in, seconds out.

    Every gap between kernels (and, with `window`, from its start to the first kernel and from the last kernel to
    its end) is counted by size (`gaps_by_size`: {bucket: [count, seconds]}) and charged to the host op running at
    its midpoint: the innermost one (latest start) of those in progress, or "after <op>" for the op that ended
    last before it when none is (Python between ops), with the innermost Python frame of endo_rl/ or bench/ in
    progress when the profile recorded stacks ("op @ frame"). `idle_by_host_op`: [[seconds, gaps, label], ...], largest
    first; only gaps of 10 us or more are charged (shorter ones are a launch's own latency).
    """
    runs = merged(kernels)
    gaps = [(a[1], b[0]) for a, b in zip(runs, runs[1:])]
    if window is not None and runs:
        gaps = [(window[0], runs[0][0]), *gaps, (runs[-1][1], window[1])]
    elif window is not None:
        gaps = [window]
    sizes = {label: [0, 0.0] for _, label in GAP_SIZES}
    charged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    ops = sorted(host_ops)
    by_end = sorted(host_ops, key=lambda op: op[1])
    active: list[tuple[float, float, float, str]] = []  # heap of (end, -start, start, label) begun by now
    i = j = 0
    last = None  # the op that ended last before the current midpoint
    for start, end in sorted(g for g in gaps if g[1] > g[0]):
        us = end - start
        bucket = next(label for limit, label in GAP_SIZES if us < limit)
        sizes[bucket][0] += 1
        sizes[bucket][1] += us / 1e6
        if us < 10:
            continue
        mid = (start + end) / 2
        while i < len(ops) and ops[i][0] <= mid:
            heapq.heappush(active, (ops[i][1], -ops[i][0], ops[i][0], ops[i][2]))
            i += 1
        while active and active[0][0] <= mid:
            heapq.heappop(active)
        while j < len(by_end) and by_end[j][1] <= mid:
            last = by_end[j]
            j += 1
        if active:  # innermost first; a CUDA runtime call is named with the op that made it
            inner = sorted(active, key=lambda op: (-op[2], op[0]))
            label = inner[0][3]
            if _runtime(label):
                label = next((f"{op[3]} > {label}" for op in inner if not _runtime(op[3])), label)
            ours = next((op[3] for op in inner if _ours(op[3])), None)  # Python frames (profiled with stacks)
            if ours is not None and ours != label:
                label = f"{label} @ {ours}"
        else:
            label = f"after {last[2]}" if last is not None else "(no host op)"
        charged[label][0] += us / 1e6
        charged[label][1] += 1
    ranked = sorted(charged.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "gaps_by_size": sizes,
        "idle_by_host_op": [[round(s, 6), int(n), label[:160]] for label, (s, n) in ranked],
    }


def _runtime(name: str) -> bool:
    return name.startswith(("cuda", "cu"))


def _ours(name: str) -> bool:
    return "endo_rl/" in name or "bench/" in name


def phase_breakdown(events, device: str, top: int = 8) -> dict:
    """{phase: {wall_s, kernel_s, busy_s, idle_gaps, by_category: {category: s}, top: [[ms, count, category,
    name], ...], gaps_by_size, idle_by_host_op}}. busy_s: how long any kernel ran (the union of their intervals);
    idle_gaps: [count, seconds] of the gaps over 1 ms between kernels, when the device waited for the host;
    gaps_by_size and idle_by_host_op (`idle_by_host_op`): every gap in the phase's range, and the host op each
    one is charged to."""
    ranges = sorted(
        (e.time_range.start, e.time_range.end, e.name.removeprefix("phase/"))
        for e in events
        if e.name.startswith("phase/")
    )
    kind = DeviceType.CUDA if device == "cuda" else DeviceType.CPU
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    host: dict[str, list[tuple[float, float, str]]] = defaultdict(
        list
    )  # what the host ran while the device idled
    for e in events:
        if e.name.startswith("phase/"):
            continue
        phase = next((name for start, end, name in ranges if start <= e.time_range.start < end), None)
        if e.device_type == DeviceType.CPU and phase is not None and not e.name.startswith("ProfilerStep"):
            host[phase].append((e.time_range.start, e.time_range.end, e.name))
        if e.device_type != kind or getattr(e, "is_python_function", False):
            continue
        phase = phase or "between"
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
        window = next(((start, end) for start, end, name in ranges if name == phase), None)
        wall = None if window is None else (window[1] - window[0]) / 1e6
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
        if window is not None:
            out[phase].update(idle_by_host_op(intervals.get(phase, []), host.get(phase, []), window))
    return out
