"""Issue 11's corrections in the pure RL math, against brute-force float64 loops: GAE bootstrapping a truncated
response, GRPO statistics over the valid responses only, and verl's log-ratio / k3 guards."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import gae_brute

from endo_rl.rl import algorithms as A


def test_gae_bootstraps_truncated_rows_with_the_next_value():
    g = torch.Generator().manual_seed(3)
    rewards = torch.randn(4, 6, generator=g, dtype=torch.float64)
    values = torch.randn(4, 6, generator=g, dtype=torch.float64)
    lengths = [6, 2, 6, 4]
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    truncated = torch.tensor([True, False, False, True])
    next_values = torch.randn(4, generator=g, dtype=torch.float64)
    final = torch.where(truncated, next_values, 0.0)
    adv, ret = A.gae(rewards, values, mask, gamma=0.99, lam=0.9, final_values_B=final)
    old, _ = A.gae(rewards, values, mask, gamma=0.99, lam=0.9)
    for b, n in enumerate(lengths):
        want = gae_brute(rewards[b].tolist(), values[b].tolist(), n, 0.99, 0.9, final[b].item())
        assert adv[b, :n].tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)
        assert adv[b, n:].abs().sum() == 0
        torch.testing.assert_close(ret[b, :n], adv[b, :n] + values[b, :n])
        # the old behaviour (value 0 after every response) differs exactly on the truncated rows
        assert bool((adv[b, :n] - old[b, :n]).abs().max() > 1e-3) == bool(truncated[b])


def _grpo_brute(rewards, valid, k, scale, eps):
    out = []
    for start in range(0, len(rewards), k):
        group = [(r, v) for r, v in zip(rewards[start : start + k], valid[start : start + k])]
        kept = [r for r, v in group if v]
        if len(kept) < 2:
            out += [0.0] * k
            continue
        mean = math.fsum(kept) / len(kept)
        std = math.sqrt(math.fsum((r - mean) ** 2 for r in kept) / (len(kept) - 1))
        out += [((r - mean) / (std + eps) if scale else r - mean) if v else 0.0 for r, v in group]
    return out


@pytest.mark.parametrize("scale", [True, False])
def test_grpo_statistics_over_valid_responses_only(scale):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(12, generator=g, dtype=torch.float64)
    valid = torch.tensor([1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1], dtype=torch.bool)  # group 2 has one valid
    got = A.grpo_advantages(rewards, 4, scale, 1e-6, valid_B=valid)
    assert got.tolist() == pytest.approx(_grpo_brute(rewards.tolist(), valid.tolist(), 4, scale, 1e-6))
    all_valid = A.grpo_advantages(rewards, 4, scale, 1e-6, valid_B=torch.ones(12, dtype=torch.bool))
    torch.testing.assert_close(all_valid, A.grpo_advantages(rewards, 4, scale, 1e-6))


def test_k3_is_clamped_like_verl():
    ref = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.tensor([[-60.0, -5.0, 0.3, 60.0]], dtype=torch.float64, requires_grad=True)
    k3 = A.kl_penalty(logp, ref, "k3")
    # d = -60 would give exp(60) ~ 1e26; clamped: d -> -20, k3 = exp(20) - 21 -> capped at 10
    assert k3[0, 0].item() == 10.0
    assert k3[0, 1].item() == pytest.approx(min(math.exp(5.0) - 5.0 - 1.0, 10.0))
    assert k3[0, 2].item() == pytest.approx(math.exp(-0.3) + 0.3 - 1.0)
    assert k3[0, 3].item() == 10.0  # d clamped to 20: exp(-20) + 19, capped at 10
    k3.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0


def test_policy_ratio_log_is_clamped_like_verl():
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.tensor([[800.0, 0.1]], dtype=torch.float64, requires_grad=True)  # exp(800) = inf in float64
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    loss, _ = A.policy_loss(logp, old, adv, torch.ones(1, 2, dtype=torch.bool), 0.2, "token_mean")
    # token 0: max(-A * exp(20), -A * 1.2) = exp(20); token 1: max(-exp(.1), -1.2) = -1.2
    assert loss.item() == pytest.approx((math.exp(20.0) - 1.2) / 2)
    loss.backward()
    assert torch.isfinite(logp.grad).all()


def test_policy_logprobs_and_values_at_the_sampling_temperature():
    """Log-probs of softmax(z / T) against a loop over positions; V(s_{H+1}) at the last response token."""
    from conftest import make_tiny_qwen

    from endo_rl.core.batch import pack
    from endo_rl.rl.policy import PolicyModel

    lm = make_tiny_qwen(dtype=torch.float64)
    policy = PolicyModel(lm, value_head=True).double()
    with torch.no_grad():
        policy.value_head.weight.normal_()
    prompts, responses = [[5, 6, 7], [8]], [[9, 10], [11, 12, 13, 14]]
    batch = pack(prompts, responses, pad_id=151643)
    out = policy(**vars(batch), temperature=0.5)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        with torch.no_grad():
            hidden = lm.model(input_ids=torch.tensor([p + r])).last_hidden_state[0]
            logits = lm.lm_head(hidden)
        for h, token in enumerate(r):
            want = torch.log_softmax(logits[len(p) - 1 + h] / 0.5, -1)[token]
            assert out["logprobs_BL"][b, h].item() == pytest.approx(want.item(), rel=1e-9)
        want_v = policy.value_head(hidden[len(p) + len(r) - 1])[0]
        assert out["final_values_B"][b].item() == pytest.approx(want_v.item(), rel=1e-6)  # float32 values
