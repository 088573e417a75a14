"""The endogenous reward engine against a brute-force float64 loop, and its invariants."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_qwen

from endo_rl.core.batch import pack
from endo_rl.reward import endogenous as reward
from endo_rl.reward.reference import ReferenceModel, naive_reference_forward, reference_forward

EOS = 151645
PAD = 151643  # Qwen's <|endoftext|>: also a real token that can appear inside a response


@pytest.fixture(scope="module")
def model64():
    return make_tiny_qwen(dtype=torch.float64)


@pytest.fixture(scope="module")
def pairs(qwen_tokenizer):
    """Responses of different lengths; one ends with EOS, one contains the pad id as a real token."""
    tok = qwen_tokenizer
    prompts = ["What is 2+3?", "Name a prime number larger than ten.", "Hi"]
    responses = ["2+3 = 5.", "Eleven is prime, and so is thirteen", "Hello there"]
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    response_ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
    response_ids[0] = response_ids[0] + [EOS]
    response_ids[2] = response_ids[2] + [PAD, EOS]
    return prompt_ids, response_ids


def brute_force(
    model, prompt: list[int], response: list[int], alpha: float, cut: bool = False, temperature: float = 1.0
) -> tuple[list[float], list[float]]:
    """A Python loop over positions, one unpadded sequence at a time: r_h = alpha*(z_h[a_h] - lse(z_{h+1})).

    After the last token lse := 0 (terminal), or, for a response `cut` at the token limit, the logsumexp of the
    logits at the last token's own position (z_{H+1}). Log-probs are those of softmax(z / temperature).
    """
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # [T, V]
    rewards, logprobs = [], []
    for h, token in enumerate(response):
        pos = len(prompt) - 1 + h  # the position whose logits predict response token h
        z_h = logits[pos]
        last = h + 1 == len(response)
        next_lse = 0.0 if last and not cut else torch.logsumexp(logits[pos + 1], 0).item()
        rewards.append(alpha * (z_h[token].item() - next_lse))
        logprobs.append(z_h[token].item() / temperature - torch.logsumexp(z_h / temperature, 0).item())
    return rewards, logprobs


def test_token_rewards_match_brute_force(model64, pairs):
    prompt_ids, response_ids = pairs
    out = reference_forward(model64, pack(prompt_ids, response_ids, PAD), alpha=0.7, chunk_size=5)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        want_r, want_lp = brute_force(model64, p, r, alpha=0.7)
        torch.testing.assert_close(
            out.token_rewards_BL[b, : len(r)], torch.tensor(want_r, dtype=torch.float64)
        )
        torch.testing.assert_close(out.logprobs_BL[b, : len(r)], torch.tensor(want_lp, dtype=torch.float64))
        assert out.token_rewards_BL[b, len(r) :].abs().sum() == 0
        assert out.mask_BL[b].sum() == len(r)  # EOS and the in-response pad id are both scored


@pytest.mark.parametrize("forward", [reference_forward, naive_reference_forward])
def test_truncated_rows_bootstrap_the_soft_value_after_the_last_token(model64, pairs, forward):
    """A row cut at the token limit: its last reward subtracts alpha * logsumexp(z_{H+1}), not the terminal 0."""
    prompt_ids, response_ids = pairs
    cut_B = torch.tensor([False, True, True])
    kwargs = {"chunk_size": 4} if forward is reference_forward else {}
    batch = pack(prompt_ids, response_ids, PAD)
    out = forward(model64, batch, 0.7, bootstrap_B=cut_B, **kwargs)
    terminal = forward(model64, batch, 0.7, **kwargs)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        want_r, _ = brute_force(model64, p, r, alpha=0.7, cut=bool(cut_B[b]))
        got = out.token_rewards_BL[b, : len(r)]
        torch.testing.assert_close(got, torch.tensor(want_r, dtype=torch.float64), rtol=1e-10, atol=1e-10)
        assert out.rewards_B[b].item() == pytest.approx(math.fsum(want_r), rel=1e-10)
        if cut_B[b]:  # the old behaviour (terminal for every row) differs by alpha * lse(z_{H+1})
            gap = terminal.token_rewards_BL[b, len(r) - 1] - got[-1]
            assert gap.item() == pytest.approx(0.7 * out.final_lse_B[b].item(), rel=1e-10)
            assert abs(gap.item()) > 0.1


@pytest.mark.parametrize("forward", [reference_forward, naive_reference_forward])
def test_logprobs_use_the_sampling_temperature_and_rewards_the_raw_logits(model64, pairs, forward):
    prompt_ids, response_ids = pairs
    batch = pack(prompt_ids, response_ids, PAD)
    raw = forward(model64, batch, 1.0)
    hot = forward(model64, batch, 1.0, temperature=0.5)
    torch.testing.assert_close(hot.token_rewards_BL, raw.token_rewards_BL)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        _, want = brute_force(model64, p, r, alpha=1.0, temperature=0.5)
        torch.testing.assert_close(hot.logprobs_BL[b, : len(r)], torch.tensor(want, dtype=torch.float64))
    assert (hot.logprobs_BL - raw.logprobs_BL).abs().max() > 0.1


def test_sequence_reward_telescopes(model64, pairs):
    """sum_h r_h = alpha * (log pi(y|x) + logsumexp(z_1))."""
    prompt_ids, response_ids = pairs
    alpha = 1.3
    out = reference_forward(model64, pack(prompt_ids, response_ids, PAD), alpha=alpha)
    for b, p in enumerate(prompt_ids):
        with torch.no_grad():
            z_1 = model64(input_ids=torch.tensor([p])).logits[0, -1].double()
        want = alpha * (out.logprobs_BL[b].sum() + torch.logsumexp(z_1, 0))
        torch.testing.assert_close(out.rewards_B[b], want)


def test_left_and_right_padding_agree(model64, pairs):
    prompt_ids, response_ids = pairs
    right = reference_forward(model64, pack(prompt_ids, response_ids, PAD, "right"), alpha=1.0)
    left = reference_forward(model64, pack(prompt_ids, response_ids, PAD, "left"), alpha=1.0)
    torch.testing.assert_close(left.token_rewards_BL, right.token_rewards_BL)
    torch.testing.assert_close(left.logprobs_BL, right.logprobs_BL)


def test_batched_equals_one_at_a_time(model64, pairs):
    prompt_ids, response_ids = pairs
    batched = reference_forward(model64, pack(prompt_ids, response_ids, PAD), alpha=1.0)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        single = reference_forward(model64, pack([p], [r], PAD), alpha=1.0)
        torch.testing.assert_close(batched.token_rewards_BL[b, : len(r)], single.token_rewards_BL[0])


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_chunked_equals_naive(pairs, chunk_size):
    model = make_tiny_qwen(dtype=torch.float32, seed=1)
    prompt_ids, response_ids = pairs
    batch = pack(prompt_ids, response_ids, PAD)
    with torch.no_grad():
        chunked = reference_forward(model, batch, alpha=1.0, chunk_size=chunk_size)
        naive = naive_reference_forward(model, batch, alpha=1.0)
    torch.testing.assert_close(chunked.token_rewards_BL, naive.token_rewards_BL, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(chunked.logprobs_BL, naive.logprobs_BL, rtol=1e-5, atol=1e-4)


def test_alpha_scales_rewards_linearly(model64, pairs):
    prompt_ids, response_ids = pairs
    batch = pack(prompt_ids, response_ids, PAD)
    one = reference_forward(model64, batch, alpha=1.0)
    for alpha in (0.1, 2.5):
        scaled = reference_forward(model64, batch, alpha=alpha)
        torch.testing.assert_close(scaled.token_rewards_BL, alpha * one.token_rewards_BL)
        torch.testing.assert_close(scaled.logprobs_BL, one.logprobs_BL)  # log-probs do not depend on alpha


def test_reward_functions_by_hand():
    """Two responses of lengths 3 and 1, logits stats given directly."""
    chosen = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    lse = torch.tensor([[5.0, 6.0, 7.0], [8.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rewards = reward.endogenous_token_rewards(chosen, lse, mask, alpha=2.0)
    torch.testing.assert_close(rewards, torch.tensor([[2 * (1 - 6.0), 2 * (2 - 7.0), 2 * 3.0], [8.0, 0, 0]]))
    logprobs = reward.token_logprobs(chosen, lse, mask)
    torch.testing.assert_close(logprobs, torch.tensor([[-4.0, -4.0, -4.0], [-4.0, 0, 0]]))
    with pytest.raises(ValueError, match="alpha"):
        reward.endogenous_token_rewards(chosen, lse, mask, alpha=0.0)


def test_logit_stats_against_log_softmax():
    torch.manual_seed(0)
    hidden, weight = torch.randn(11, 8, dtype=torch.float64), torch.randn(50, 8, dtype=torch.float64)
    bias, targets = torch.randn(50, dtype=torch.float64), torch.randint(0, 50, (11,))
    chosen, lse, _ = reward.logit_stats(hidden, weight, targets, bias, chunk_size=3)
    logits = hidden @ weight.T + bias
    torch.testing.assert_close(chosen - lse, torch.log_softmax(logits, -1)[torch.arange(11), targets])


def test_score_each_keeps_input_order(qwen_tokenizer, pairs):
    prompt_ids, response_ids = pairs
    ref = ReferenceModel(make_tiny_qwen(dtype=torch.float64), qwen_tokenizer, alpha=1.0, batch_size=2)
    scored = ref.score_each(prompt_ids, response_ids)
    for s, p, r in zip(scored, prompt_ids, response_ids):
        want, _ = brute_force(ref.model, p, r, 1.0)
        assert s.token_ids == r
        assert s.reward == pytest.approx(math.fsum(want), rel=1e-9)


def test_policy_head_chunks_match_full_log_softmax_with_gradients():
    from endo_rl.rl.policy import head_logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 100, bias=False).double()
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    targets, weights = torch.randint(0, 100, (37,)), torch.arange(37.0, dtype=torch.float64)
    logprobs, entropy = head_logprobs(head, hidden, targets, chunk_size=5)
    (logprobs * weights).sum().backward()
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    full = torch.log_softmax(head(hidden), -1)
    (full.gather(-1, targets[:, None])[:, 0] * weights).sum().backward()
    torch.testing.assert_close(logprobs, full.gather(-1, targets[:, None])[:, 0])
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1).detach())
    torch.testing.assert_close(grads, (hidden.grad, head.weight.grad))
