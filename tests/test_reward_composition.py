"""`rewards.compose_rewards`, the one place the training reward is put together, against a float64 loop."""

from __future__ import annotations

import pytest
import torch

from endo_rl.rl.rewards import RewardWeights, compose_rewards, length_penalty

T, F = True, False


def brute_force(w: RewardWeights, lengths, endo, correct, logp, ref):
    """The module docstring's equation, one row and one position at a time, in Python floats (float64)."""
    B, L = len(lengths), len(endo[0])
    rewards = [[0.0] * L for _ in range(B)]
    parts = {"total": [], "endogenous": [], "kl_penalty": [], "correctness": [], "length_penalty": []}
    for b, n in enumerate(lengths):
        endo_sum = sum(endo[b][h] for h in range(n))
        seq = (
            w.correctness * correct[b] if correct is not None else 0.0
        ) - w.length_penalty * n / w.max_new_tokens
        task = 0.0
        kl = 0.0
        for h in range(n):
            r = w.endogenous * endo[b][h] if w.level == "token" else 0.0
            if h == n - 1:
                r += (w.endogenous * endo_sum if w.level == "sequence" else 0.0) + seq
            task += r
            k1 = w.kl_coef * (logp[b][h] - ref[b][h])
            kl += k1
            rewards[b][h] = r - k1
        parts["total"].append(task)
        parts["endogenous"].append(endo_sum)
        parts["kl_penalty"].append(-kl)
        parts["correctness"].append(correct[b] if correct is not None else None)
        parts["length_penalty"].append(-w.length_penalty * n / w.max_new_tokens)
    return rewards, parts


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_compose_rewards_matches_a_loop_in_float64(level, kl_coef):
    g = torch.Generator().manual_seed(0)
    lengths = [5, 1, 3, 4]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    # garbage past each row's end must not leak into anything
    endo, logp, ref = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    w = RewardWeights(0.7, level, correctness=2.0, length_penalty=0.5, max_new_tokens=5, kl_coef=kl_coef)
    rewards_BL, parts = compose_rewards(w, mask, endo, correct, logp, ref)
    want, want_parts = brute_force(w, lengths, endo.tolist(), correct.tolist(), logp.tolist(), ref.tolist())
    assert rewards_BL.tolist() == [pytest.approx(row, rel=1e-6, abs=1e-6) for row in want]
    for name in ("total", "endogenous", "kl_penalty", "correctness", "length_penalty"):
        assert parts[name].tolist() == pytest.approx(want_parts[name], rel=1e-6, abs=1e-6), name
    # the parts add up: total token rewards = task reward + KL penalty, per sequence
    torch.testing.assert_close(rewards_BL.sum(-1).double(), (parts["total"] + parts["kl_penalty"]).double())
    if kl_coef == 0:
        assert parts["kl_penalty"].abs().sum() == 0


def test_sources_that_are_off_are_not_reported_and_need_no_inputs():
    mask = torch.tensor([[T, T, F], [T, T, T]])
    endo = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    w = RewardWeights(1.0, "token", correctness=0.0, length_penalty=0.0, max_new_tokens=3, kl_coef=0.0)
    rewards_BL, parts = compose_rewards(w, mask, endo)  # no correctness, no log-probs
    assert set(parts) == {"total", "endogenous", "kl_penalty"}
    torch.testing.assert_close(rewards_BL, torch.tensor([[1.0, 2.0, 0.0], [4.0, 5.0, 9.0]]))
    torch.testing.assert_close(parts["total"], torch.tensor([3.0, 18.0]))


def test_levels_differ_only_in_where_the_endogenous_reward_lands():
    endo = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    correct = torch.tensor([1.0, 0.0])
    kw = dict(correctness=10.0, length_penalty=0.0, max_new_tokens=3, kl_coef=0.0)
    dense, _ = compose_rewards(RewardWeights(0.5, "token", **kw), mask, endo, correct)
    seq, _ = compose_rewards(RewardWeights(0.5, "sequence", **kw), mask, endo, correct)
    torch.testing.assert_close(dense, torch.tensor([[0.5, 1.0, 11.5], [2.0, 2.5, 0.0]]))
    torch.testing.assert_close(seq, torch.tensor([[0.0, 0.0, 13.0], [0.0, 4.5, 0.0]]))


def test_bad_inputs_are_named():
    mask, endo = torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="unknown reward level 'words'"):
        compose_rewards(RewardWeights(1.0, "words", 0.0, 0.0, 2, 0.0), mask, endo)
    with pytest.raises(ValueError, match="correct_B"):
        compose_rewards(RewardWeights(1.0, "token", 1.0, 0.0, 2, 0.0), mask, endo)


def test_length_penalty_is_relative_to_the_limit():
    pen = length_penalty(torch.tensor([0, 5, 10]), max_new_tokens=10, weight=2.0)
    torch.testing.assert_close(pen, torch.tensor([0.0, -1.0, -2.0]))
