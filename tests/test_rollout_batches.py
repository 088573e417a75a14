"""Length-grouped micro-batches: the reference and policy passes give what each sequence alone gives (float64),
and compute fewer padded positions than micro-batches in row order; the no-grad passes' padding-aware grouping
is the least-cost one (brute force over every partition) and pads little on the profile's realistic lengths."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
from conftest import small_qwen

from endo_rl.rl import rollout as rl
from endo_rl.rl.policy import PolicyModel

PAD = 0


def ragged(seed: int = 0, n: int = 10) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    prompts = [[rng.randrange(100, 1000) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    responses = [[rng.randrange(100, 1000) for _ in range(rng.randint(1, 30))] for _ in range(n)]
    return prompts, responses


def test_micro_batches_group_by_length_and_keep_row_order():
    lengths = [5, 40, 6, 41, 7, 42]
    assert rl.micro_batches(lengths, 3) == [[0, 2, 4], [1, 3, 5]]
    assert rl.micro_batches(lengths, 6) == [[0, 1, 2, 3, 4, 5]]  # one batch: the rows as they are
    in_order = [list(range(i, i + 3)) for i in (0, 3)]
    assert rl.computed_tokens(lengths, rl.micro_batches(lengths, 3)) == 3 * 7 + 3 * 42
    assert rl.computed_tokens(lengths, in_order) == 3 * 40 + 3 * 42


def test_reference_pass_equals_each_sequence_alone():
    model = small_qwen()
    prompts, responses = ragged()
    logprobs, rewards = rl.reference_pass(model, prompts, responses, PAD, 1.0, batch_size=4)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        alone_lp, alone_rw = rl.reference_pass(model, [p], [r], PAD, 1.0, batch_size=1)
        torch.testing.assert_close(logprobs[i, : len(r)], alone_lp[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(rewards[i, : len(r)], alone_rw[0], rtol=1e-10, atol=1e-10)
        assert not logprobs[i, len(r) :].any() and not rewards[i, len(r) :].any()


def test_policy_pass_equals_each_sequence_alone_and_pads_less():
    policy = PolicyModel(small_qwen(), value_head=True)
    with torch.no_grad():
        policy.value_head.weight.normal_()
    prompts, responses = ragged(seed=1, n=12)
    out = rl.policy_pass(policy, torch.device("cpu"), prompts, responses, PAD, batch_size=4)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        alone = rl.policy_pass(policy, torch.device("cpu"), [p], [r], PAD, batch_size=1)
        for key in ("logprobs_BL", "values_BL", "entropy_BL"):
            torch.testing.assert_close(out[key][i, : len(r)], alone[key][0], rtol=1e-10, atol=1e-10)
    lengths = rl.sequence_lengths(prompts, responses)
    in_order = [list(range(i, i + 4)) for i in range(0, 12, 4)]
    assert rl.computed_tokens(lengths, rl.micro_batches(lengths, 4)) < rl.computed_tokens(lengths, in_order)


def partitions(items: list[int]):
    """Every partition of `items` into non-empty groups (a loop over set partitions, not the dynamic program)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        yield [[first], *part]
        for k in range(len(part)):
            yield [*part[:k], [first, *part[k]], *part[k + 1 :]]


def cost(lengths: list[int], groups: list[list[int]], overhead: int) -> int:
    return rl.computed_tokens(lengths, groups) + overhead * len(groups)


def check_format(lengths: list[int], groups: list[list[int]], max_rows: int) -> None:
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row exactly once
    assert all(1 <= len(g) <= max_rows and g == sorted(g) for g in groups)  # the cap; rows in their own order


@pytest.mark.parametrize("overhead", [0, 7, 40])
def test_padding_aware_micro_batches_are_the_least_cost_partition(overhead):
    rng = random.Random(overhead)
    for n in range(1, 9):
        every = list(partitions(list(range(n))))
        for _ in range(3):
            lengths = [rng.randint(1, 60) for _ in range(n)]
            for max_rows in (1, 2, 3, n):
                groups = rl.padding_aware_micro_batches(lengths, max_rows, overhead)
                check_format(lengths, groups, max_rows)
                best = min(cost(lengths, p, overhead) for p in every if max(map(len, p)) <= max_rows)
                assert cost(lengths, groups, overhead) == best, (lengths, max_rows)
                assert rl.padding_aware_micro_batches(lengths, max_rows, overhead) == groups  # deterministic


def test_padding_aware_micro_batches_cap_rows_and_fill_them_on_equal_lengths():
    rng = random.Random(0)
    lengths = [rng.randint(1, 2000) for _ in range(200)]
    for max_rows in (1, 3, 16, 64, 500):
        check_format(lengths, rl.padding_aware_micro_batches(lengths, max_rows), max_rows)
    assert rl.padding_aware_micro_batches([50] * 12, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert [len(g) for g in rl.padding_aware_micro_batches([50] * 10, 4)] == [2, 4, 4]
    assert rl.padding_aware_micro_batches([], 4) == []
    with pytest.raises(ValueError, match="max_rows"):
        rl.padding_aware_micro_batches([1, 2], 0)


def test_padding_aware_micro_batches_on_the_profiles_realistic_lengths():
    """bench/profile_forward.py's rollout(64, 0): prompts of 60-200 tokens, responses geometric with mean 256
    capped at 1024; fixed groups of 32 compute 1.90x the real tokens there."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from profile_forward import rollout

    lengths = rl.sequence_lengths(*rollout(64, 0))
    groups = rl.padding_aware_micro_batches(lengths, 32)
    check_format(lengths, groups, 32)
    real, fixed = sum(lengths), {size: rl.micro_batches(lengths, size) for size in range(1, 33)}
    assert rl.computed_tokens(lengths, groups) / real <= 1.25  # 1.21 (fixed 32: 1.90)
    assert len(groups) < len(fixed[4])  # 4 vs 16 micro-batches
    for size, fixed_groups in fixed.items():  # lower modelled cost than any fixed size under the same cap
        assert cost(lengths, groups, rl.OVERHEAD_TOKENS) < cost(lengths, fixed_groups, rl.OVERHEAD_TOKENS), (
            size
        )
    cheaper_forwards = rl.padding_aware_micro_batches(lengths, 32, overhead_tokens=1024)
    assert rl.computed_tokens(lengths, cheaper_forwards) / real <= 1.2  # 1.17 in 5 micro-batches


@pytest.mark.parametrize("overhead", [0, 40])
def test_padding_aware_micro_batches_with_a_row_minimum_are_the_least_cost_such_partition(overhead):
    rng = random.Random(overhead + 1)
    for n in range(1, 8):
        every = list(partitions(list(range(n))))
        lengths = [rng.randint(1, 60) for _ in range(n)]
        for max_rows in (2, 3, n):
            if max_rows < 2:
                continue
            groups = rl.padding_aware_micro_batches(lengths, max_rows, overhead, min_rows=2)
            check_format(lengths, groups, max_rows)
            if n < 2:  # fewer rows than the minimum: one micro-batch of them all
                assert groups == [list(range(n))]
                continue
            allowed = [p for p in every if all(2 <= len(g) <= max_rows for g in p)]
            if not allowed:  # 3 rows in pairs, say: the minimum is dropped
                assert groups == rl.padding_aware_micro_batches(lengths, max_rows, overhead)
                continue
            assert min(map(len, groups)) >= 2
            assert cost(lengths, groups, overhead) == min(cost(lengths, p, overhead) for p in allowed)
    with pytest.raises(ValueError, match="min_rows"):
        rl.padding_aware_micro_batches([1, 2, 3], 2, min_rows=3)
