"""PPO/GRPO math against hand-computed numbers and a brute-force float64 loop; aggregation invariances."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import gae_brute

from endo_rl.rl import algorithms as A

T, F = True, False


def test_gae_hand_computed():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 99.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [0.0, 0.0, 99.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    adv, ret = A.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: delta = [1.4, 2.35, 1.5]; A2 = 1.5, A1 = 2.35 + 0.72 * 1.5, A0 = 1.4 + 0.72 * A1
    torch.testing.assert_close(adv[0], torch.tensor([3.8696, 3.43, 1.5]))
    torch.testing.assert_close(ret[0], torch.tensor([4.3696, 4.43, 3.0]))
    # row 1 ends after two tokens: the masked 99s must not leak in
    torch.testing.assert_close(adv[1], torch.tensor([1.72, 1.0, 0.0]))
    torch.testing.assert_close(ret[1], torch.tensor([1.72, 1.0, 0.0]))


def test_gae_gamma_lam_one_zero_values_is_reward_to_go():
    rewards = torch.tensor([[1.0, -2.0, 4.0]])
    adv, ret = A.gae(rewards, torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[3.0, 2.0, 4.0]]))
    torch.testing.assert_close(ret, adv)


def test_gae_against_brute_force_float64():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(4, 7, generator=g, dtype=torch.float64)
    values = torch.randn(4, 7, generator=g, dtype=torch.float64)
    lengths = [7, 1, 4, 6]
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    adv, _ = A.gae(rewards, values, mask, gamma=0.97, lam=0.9)
    for b, n in enumerate(lengths):
        expected = gae_brute(rewards[b].tolist(), values[b].tolist(), n, 0.97, 0.9)
        assert adv[b, :n].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert adv[b, n:].abs().sum() == 0


def test_grpo_advantages_hand_computed():
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    scaled = A.grpo_advantages(rewards, group_size=3, scale=True, eps=0.0)
    s = 1 / math.sqrt(12)  # group 2: centred [-2, -2, 4], unbiased std sqrt(24 / 2)
    torch.testing.assert_close(scaled, torch.tensor([-1.0, 0.0, 1.0, -2 * s, -2 * s, 4 * s]))
    unscaled = A.grpo_advantages(rewards, group_size=3, scale=False)
    torch.testing.assert_close(unscaled, torch.tensor([-1.0, 0.0, 1.0, -2.0, -2.0, 4.0]))


def test_grpo_advantages_rejects_bad_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        A.grpo_advantages(torch.zeros(6), group_size=4)


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])  # d = log 2
    assert A.kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert A.kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1)
    assert A.kl_penalty(ref, ref, "k3").item() == 0.0


def test_policy_loss_hand_computed():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, clipped = A.policy_loss(logp, torch.zeros(1, 3), adv, mask, clip_eps=0.2, agg="token_mean")
    # per token max(-A rho, -A clip(rho)): [-1.2 (clipped), -0.5, 2.0]
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    assert clipped.item() == 1


def test_value_loss_hand_computed():
    values, old = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.5]])
    returns = torch.tensor([[3.0, 0.0]])
    loss, clipped = A.value_loss(values, old, returns, torch.ones(1, 2, dtype=torch.bool), 0.2, "token_mean")
    # token 0: max(4, (0.7 - 3)^2 = 5.29); token 1: max(4, 0.49)
    assert loss.item() == pytest.approx(0.5 * (5.29 + 4.0) / 2)
    assert clipped.item() == 1


def test_aggregate_token_and_sequence_mean():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    assert A.aggregate(loss, mask, "token_mean").item() == pytest.approx(15 / 5)
    assert A.aggregate(loss, mask, "seq_mean").item() == pytest.approx((2.0 + 4.5) / 2)


def test_whiten_and_global_moments():
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[T, T, T, F]])
    w = A.whiten(x, mask)
    torch.testing.assert_close(w, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]) * math.sqrt(1.5), atol=1e-6, rtol=0)
    # moments summed over two "ranks" = moments of the concatenation
    a, b = x[:, :2], x[:, 2:]
    ma, mb = A.masked_moments(a, mask[:, :2]), A.masked_moments(b, mask[:, 2:])
    torch.testing.assert_close(ma + mb, A.masked_moments(x, mask))


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean"])
def test_loss_is_invariant_to_micro_batching(agg):
    """One big batch == micro-batches with summed gradients, when normalized by the step's global count."""
    g = torch.Generator().manual_seed(1)
    B, L = 6, 5
    lengths = torch.tensor([5, 1, 3, 2, 5, 4])
    mask = torch.arange(L)[None] < lengths[:, None]
    old = torch.randn(B, L, generator=g, dtype=torch.float64)
    adv = torch.randn(B, L, generator=g, dtype=torch.float64)
    logp = (old + 0.3 * torch.randn(B, L, generator=g, dtype=torch.float64)).requires_grad_()
    denom = int(mask.sum()) if agg == "token_mean" else B
    full, _ = A.policy_loss(logp, old, adv, mask, 0.2, agg, denom)
    (grad_full,) = torch.autograd.grad(full, logp)
    total, grad_acc = 0.0, torch.zeros_like(logp)
    for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven micro-batches
        part, _ = A.policy_loss(logp[rows], old[rows], adv[rows], mask[rows], 0.2, agg, denom)
        grad_acc += torch.autograd.grad(part, logp)[0]
        total += part.item()
    assert total == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(grad_acc, grad_full, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("valid", [None, torch.ones(8, dtype=torch.bool)])
def test_grpo_advantages_ignore_float32_rounding_between_identical_responses(valid):
    """Identical responses whose float32 rewards differ in the last bits (padding changes the summation order)
    get advantage 0, not rounding noise blown up to order one by the division by a tiny std."""
    base = torch.tensor([-312.25] * 4 + [1.0, 2.0, 3.0, 4.0], dtype=torch.float32)
    noisy = base.clone()
    noisy[:4] += torch.tensor([0.0, 3e-5, -3e-5, 6e-5])  # a few float32 ulps at 312
    adv = A.grpo_advantages(noisy, group_size=4, scale=True, valid_B=valid)
    assert torch.equal(adv[:4], torch.zeros(4))
    expected = (base[4:] - base[4:].mean()) / (base[4:].std() + 1e-6)  # a real spread is still scaled
    torch.testing.assert_close(adv[4:], expected)
