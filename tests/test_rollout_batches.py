"""Length-grouped micro-batches: the reference and policy passes give what each sequence alone gives (float64),
and compute fewer padded positions than micro-batches in row order."""

from __future__ import annotations

import random

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
