"""Scoring responses with one causal LM in five ways: the endogenous reward and four baselines.

- `endogenous`: sum of token rewards r_h = alpha*(z_h[a_h] - logsumexp z_{h+1}) of the chat-rendered response,
  exactly `endo-rl score --chat` (same tokens, same reward).
- `loglik_norm`: mean log pi(a_h | s_h) over the same response tokens (shares the endogenous forward pass).
- `verifier`: generative verifier: P("Yes") as the first answer token to "Is this response good and correct?",
  summed over the single-token spellings of Yes (full-vocabulary softmax, not renormalized against No).
- `genrm_pointwise`: expected 1-10 score, sum_k k*P(k) / sum_k P(k) over the score tokens. When "10" is not one
  token (digits are split in Qwen and SmolLM2), P(10) = P("1") * P("0" | "1") and P(1) = P("1") * (1 - P("0"|"1")),
  read from the same forward pass by appending "1" to the prompt.
- `genrm_pairwise`: P(A) / (P(A) + P(B)) for "which response is better", averaged over both orders to cancel
  position bias: p(c > r) = (P_A(c, r) + 1 - P_A(r, c)) / 2.

The baselines read the next-token distribution at one or two positions: the decoder runs once and the LM head
is applied to those positions only, never to the full [B, T, V] logits.

Shape legend: B batch, K positions read per sequence, V vocab, D hidden size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from endo_rl.core.batch import pack
from endo_rl.core.errors import UserError
from endo_rl.reward import text as scoring
from endo_rl.reward.reference import ReferenceModel, final_hidden_states, gather_response_hidden
from endo_rl.rm_eval.metrics import METHODS  # noqa: F401  (re-exported: the method names live with the pure code)

VERIFIER_TEMPLATE = (
    "Here is a question and a response to it.\n\nQuestion:\n{prompt}\n\nResponse:\n{response}\n\n"
    "Is this response good and correct? Answer Yes or No."
)
POINTWISE_TEMPLATE = (
    "Here is a question and a response to it.\n\nQuestion:\n{prompt}\n\nResponse:\n{response}\n\n"
    "Rate the quality of the response on a scale of 1 to 10, where 1 is the worst and 10 is the best. "
    "Reply with the number only."
)
PAIRWISE_TEMPLATE = (
    "Here is a question and two responses to it.\n\nQuestion:\n{prompt}\n\nResponse A:\n{a}\n\n"
    "Response B:\n{b}\n\nWhich response is better? Answer with A or B only."
)


# ---- pure functions on next-token log-probs --------------------------------------------------------------


def token_mass(logprobs_BV: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Total probability of the given token ids, [B]."""
    return logprobs_BV[:, list(ids)].exp().sum(-1)


def choice_probability(logprobs_BV: torch.Tensor, a_ids: Sequence[int], b_ids: Sequence[int]) -> torch.Tensor:
    """P(A) renormalized over {A, B}, [B]."""
    pa, pb = token_mass(logprobs_BV, a_ids), token_mass(logprobs_BV, b_ids)
    return pa / (pa + pb)


def expected_score(
    first_BV: torch.Tensor,
    digit_ids: Sequence[int],
    ten_id: int | None,
    zero_after_one_B: torch.Tensor | None,
) -> torch.Tensor:
    """Expected 1-10 score. digit_ids are the tokens "1".."9". "10" is either its own token (`ten_id`) or
    "1" followed by "0", whose conditional probability P("0" | "1") is `zero_after_one_B`."""
    p_BK = first_BV[:, list(digit_ids)].exp()  # K = 9 digits
    if ten_id is not None:
        p_ten_B = first_BV[:, ten_id].exp()
    else:
        p_ten_B = p_BK[:, 0] * zero_after_one_B
        p_BK = torch.cat([(p_BK[:, 0] - p_ten_B)[:, None], p_BK[:, 1:]], dim=1)
    p_BK = torch.cat([p_BK, p_ten_B[:, None]], dim=1)
    values_K = torch.arange(1, 11, dtype=p_BK.dtype, device=p_BK.device)
    return (p_BK * values_K).sum(-1) / p_BK.sum(-1)


def pairwise_preference(p_a_forward: torch.Tensor, p_a_backward: torch.Tensor) -> torch.Tensor:
    """P(chosen preferred) from P(A) with chosen shown as A and P(A) with chosen shown as B."""
    return (p_a_forward + (1.0 - p_a_backward)) / 2.0


# ---- tokens and forward passes ---------------------------------------------------------------------------


def single_token_ids(tokenizer, spellings: Sequence[str]) -> list[int]:
    """Ids of the spellings that are exactly one token (deduplicated); an error when none is."""
    ids = []
    for s in spellings:
        enc = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(enc[0])
    if not ids:
        raise UserError(f"none of {list(spellings)} is a single token in this tokenizer")
    return ids


@torch.no_grad()
def next_token_logprobs(
    model: torch.nn.Module, pad_id: int, prompt_ids: Sequence[Sequence[int]], continuation: Sequence[int] = ()
) -> torch.Tensor:
    """Log-probs of the next token after each prompt, and after prompt + continuation[:k] for each k: [B, K, V]
    with K = len(continuation) + 1. One decoder pass; the LM head sees only B*K hidden states."""
    B, K = len(prompt_ids), len(continuation) + 1
    # pack() scores a "response"; its predictor positions are exactly the positions we read. The trailing pad
    # token is never attended to by the positions before it.
    responses = [[*continuation, pad_id] for _ in range(B)]
    device = next(model.parameters()).device
    batch = pack([list(p) for p in prompt_ids], responses, pad_id).to(device)
    hidden_ND = gather_response_hidden(final_hidden_states(model, batch), batch)
    logits_ND = model.get_output_embeddings()(hidden_ND)
    logits_ND = logits_ND.to(torch.promote_types(logits_ND.dtype, torch.float32))  # keep float64 when given
    return logits_ND.log_softmax(-1).view(B, K, -1)


def in_batches(
    fn: Callable[[list[int]], list[float]], lengths: Sequence[int], batch_size: int
) -> list[float]:
    """Apply fn to micro-batches of indices of similar length; results in input order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[float] = [0.0] * len(lengths)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, v in zip(idx, fn(idx)):
            out[i] = v
    return out


class Judge:
    """One model and tokenizer; each method maps (prompts, responses) or pairs to floats, batched."""

    def __init__(self, reference: ReferenceModel, system: str | None = None):
        self.ref = reference
        self.tok = reference.tokenizer
        self.system = system
        self.yes_ids = single_token_ids(self.tok, ["Yes", " Yes", "YES", "yes"])
        self.a_ids = single_token_ids(self.tok, ["A", " A"])
        self.b_ids = single_token_ids(self.tok, ["B", " B"])
        self.digit_ids = [single_token_ids(self.tok, [str(k)])[0] for k in range(1, 10)]
        ten = self.tok("10", add_special_tokens=False)["input_ids"]
        self.ten_id = ten[0] if len(ten) == 1 else None
        self.zero_id = single_token_ids(self.tok, ["0"])[0]

    def _prompt(self, user_text: str) -> list[int]:
        return scoring.chat_prompt_ids(self.tok, user_text, self.system)

    def endogenous(self, prompts: Sequence[str], responses: Sequence[str], system: str | None = None):
        """(endogenous rewards, length-normalized log-likelihoods) from one forward pass."""
        ids = [scoring.chat_ids(self.tok, p, r, system) for p, r in zip(prompts, responses)]

        def run(idx: list[int]) -> list[tuple[float, float]]:
            out = self.ref.score([ids[i][0] for i in idx], [ids[i][1] for i in idx])
            n_B = out.mask_BL.sum(-1)
            return list(zip(out.rewards_B.tolist(), (out.logprobs_BL.sum(-1) / n_B).tolist()))

        pairs = in_batches(run, [len(p) + len(r) for p, r in ids], self.ref.batch_size)
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _read(self, prompt_ids: list[list[int]], fn, continuation: Sequence[int] = ()) -> list[float]:
        def run(idx: list[int]) -> list[float]:
            logprobs_BKV = next_token_logprobs(
                self.ref.model, self.ref.pad_id, [prompt_ids[i] for i in idx], continuation
            )
            return fn(logprobs_BKV).tolist()

        return in_batches(run, [len(p) for p in prompt_ids], self.ref.batch_size)

    def verifier(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        ids = [
            self._prompt(VERIFIER_TEMPLATE.format(prompt=p, response=r)) for p, r in zip(prompts, responses)
        ]
        return self._read(ids, lambda lp: token_mass(lp[:, 0], self.yes_ids))

    def genrm_pointwise(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        ids = [
            self._prompt(POINTWISE_TEMPLATE.format(prompt=p, response=r)) for p, r in zip(prompts, responses)
        ]
        if self.ten_id is not None:
            return self._read(ids, lambda lp: expected_score(lp[:, 0], self.digit_ids, self.ten_id, None))
        zero = self.zero_id
        return self._read(
            ids,
            lambda lp: expected_score(lp[:, 0], self.digit_ids, None, lp[:, 1, zero].exp()),
            [self.digit_ids[0]],
        )

    def choice_a(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[float]:
        ids = [self._prompt(PAIRWISE_TEMPLATE.format(prompt=p, a=x, b=y)) for p, x, y in zip(prompts, a, b)]
        return self._read(ids, lambda lp: choice_probability(lp[:, 0], self.a_ids, self.b_ids))

    def genrm_pairwise(
        self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]
    ) -> list[float]:
        """P(chosen preferred to rejected) for each pair, both orders in one batched call."""
        n = len(prompts)
        p_a = self.choice_a([*prompts, *prompts], [*chosen, *rejected], [*rejected, *chosen])
        p_a_2N = torch.tensor(p_a, dtype=torch.float64)
        return pairwise_preference(p_a_2N[:n], p_a_2N[n:]).tolist()
