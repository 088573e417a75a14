"""The endogenous reward as a TRL reward function, for users who want to stay inside TRL's GRPOTrainer.

    from endo_rl.trl_adapter import EndogenousRewardFunc
    reward = EndogenousRewardFunc.from_pretrained("Qwen/Qwen2.5-Math-7B", alpha=1.0)
    GRPOTrainer(model=..., reward_funcs=[reward], ...)

TRL calls it with `prompts`, `completions` and `completion_ids` (the sampled token ids). By default those ids are
scored as they are, so the reward is computed on exactly the tokens the policy produced; this needs the reward
model to share the policy's tokenizer. Prompts are tokenized as GRPOTrainer tokenizes them for generation:
plain text with the tokenizer's special tokens (`tokenizer(text=prompt)`, e.g. a BOS where the tokenizer adds
one), conversations with `apply_chat_template(..., add_generation_prompt=True, tokenize=True)` and the same
`chat_template_kwargs` as GRPOConfig (pass them to the constructor). Pass `retokenize=True` when the tokenizers
differ: completions are then re-encoded from text with the reward model's tokenizer (without special tokens;
for conversations, as `endo-rl score --chat`). All completions of a call are scored in micro-batches of
`batch_size`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from endo_rl.core import models
from endo_rl.core.errors import UserError
from endo_rl.reward import text as scoring
from endo_rl.reward.reference import ReferenceModel


def _is_conversational(prompt: Any) -> bool:
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Replace (or add) the system message: the reward model's prompt may differ from the policy's."""
    if system is None:
        return list(messages)
    rest = [m for m in messages if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m["role"] == "assistant")


class EndogenousRewardFunc:
    """Callable reward function: one endogenous sequence reward per completion."""

    __name__ = "endogenous_reward"  # TRL logs rewards under the function's name

    def __init__(
        self,
        reference: ReferenceModel,
        system_prompt: str | None = None,
        retokenize: bool = False,
        chat_template_kwargs: dict[str, Any] | str | None = None,
    ):
        self.reference = reference
        self.system_prompt = system_prompt
        self.retokenize = retokenize
        if isinstance(chat_template_kwargs, str):  # GRPOConfig accepts a JSON string too
            chat_template_kwargs = json.loads(chat_template_kwargs)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        alpha: float = 1.0,
        system_prompt: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 16,
        retokenize: bool = False,
        chat_template_kwargs: dict[str, Any] | str | None = None,
    ) -> EndogenousRewardFunc:
        device = device or models.default_device()
        tokenizer = models.load_tokenizer(path)
        model = models.load_causal_lm(path, dtype=dtype, device=device)
        models.check_vocab(model, tokenizer)
        reference = ReferenceModel(model, tokenizer, alpha=alpha, batch_size=batch_size)
        return cls(reference, system_prompt, retokenize, chat_template_kwargs)

    def _prompt_ids(self, prompt: Any) -> list[int]:
        """The ids GRPOTrainer generated from (its `_tokenize_prompts`), with our system prompt if any."""
        tok = self.reference.tokenizer
        if _is_conversational(prompt):
            out = tok.apply_chat_template(
                [_with_system(prompt, self.system_prompt)],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                **self.chat_template_kwargs,
            )
            return list(out["input_ids"][0])
        if self.system_prompt is not None:
            raise UserError("system_prompt needs conversational prompts (lists of {role, content} messages)")
        return tok(text=prompt)["input_ids"]

    def _pair_ids(
        self, prompt: Any, completion: Any, ids: Sequence[int] | None
    ) -> tuple[list[int], list[int]]:
        if not self.retokenize:
            if ids is None:
                raise UserError("TRL passed no completion_ids; construct with retokenize=True")
            return self._prompt_ids(prompt), list(ids)
        tok = self.reference.tokenizer
        if _is_conversational(prompt):
            messages = _with_system(prompt, self.system_prompt)
            turns = [m for m in messages if m["role"] != "system"]
            if len(turns) != 1 or turns[0]["role"] != "user":
                raise UserError(
                    "retokenize=True supports prompts of one user turn (plus an optional system turn)"
                )
            system = messages[0]["content"] if messages[0]["role"] == "system" else None
            return scoring.chat_ids(
                tok, turns[0]["content"], _completion_text(completion), system, **self.chat_template_kwargs
            )
        response_ids = tok(_completion_text(completion), add_special_tokens=False)["input_ids"]
        return self._prompt_ids(prompt), response_ids

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        ids = completion_ids if completion_ids is not None else [None] * len(prompts)
        pairs = [self._pair_ids(p, c, i) for p, c, i in zip(prompts, completions, ids, strict=True)]
        scored = self.reference.score_each([p for p, _ in pairs], [r for _, r in pairs])
        return [s.reward for s in scored]
