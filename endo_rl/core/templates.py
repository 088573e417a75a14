"""Pinned prompt templates for math evaluation, and the stop tokens that end a completion.

The template moves base-model scores on MATH500 by up to 18 points, so it is named in every report and the
same one must be used before and after training.

- `qwen25-math-cot`: the Qwen2.5-Math evaluation harness's chain-of-thought prompt, written out as ChatML text
  exactly as that harness does, so a base Qwen model and its chat version see the same tokens.
- `chat-cot`: the same system prompt through the tokenizer's own chat template (for chat models that do not
  speak ChatML, e.g. Llama-style templates).
- `plain`: the question alone, no template (base models; they stop only at an end-of-text token).

Stop tokens: the tokenizer's EOS plus `<|im_end|>` and `<|endoftext|>` when the vocabulary has them. Base Qwen
models end ChatML turns with `<|im_end|>` but their EOS is `<|endoftext|>`; chat models the other way round.
"""

from __future__ import annotations

from endo_rl.core.errors import UserError

COT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN25_MATH_COT = (
    "<|im_start|>system\n"
    + COT_SYSTEM
    + "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)
TEMPLATES = {
    "qwen25-math-cot": "Qwen2.5-Math CoT prompt as literal ChatML (base and chat Qwen models)",
    "chat-cot": "the same system prompt through the tokenizer's chat template",
    "plain": "the question alone, no template",
}
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def check_template(name: str) -> None:
    if name not in TEMPLATES:
        raise UserError(f"unknown template {name!r}; valid templates: {', '.join(TEMPLATES)}")


def _token_id(tokenizer, token: str) -> int | None:
    """The id of `token` if it is a single token of the vocabulary (unknown tokens map to unk: not a match)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tokenizer.convert_ids_to_tokens(tid) != token:
        return None
    return tid


def stop_token_ids(tokenizer) -> list[int]:
    """EOS, `<|im_end|>`, `<|endoftext|>`: those the tokenizer has, sorted, without duplicates."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    ids |= {tid for tid in (_token_id(tokenizer, t) for t in STOP_TOKENS) if tid is not None}
    if not ids:
        raise UserError(
            "the tokenizer has no EOS token and no <|im_end|>/<|endoftext|>: generation would never stop"
        )
    return sorted(ids)


def pad_token_id(tokenizer) -> int:
    """The id that pads batches: the tokenizer's pad token, else its EOS, else its first stop token.

    Only ever a filler: masks come from lengths, never from comparing ids with it (Qwen's pad id is its EOS).
    """
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return stop_token_ids(tokenizer)[0]


def _qwen_cot(tokenizer, question: str) -> list[int]:
    if _token_id(tokenizer, "<|im_start|>") is None or _token_id(tokenizer, "<|im_end|>") is None:
        raise UserError(
            "template qwen25-math-cot needs <|im_start|> and <|im_end|> tokens, which this tokenizer lacks; "
            "choose chat-cot or plain (train: data.template=..., eval: --template ...)"
        )
    return tokenizer(QWEN25_MATH_COT.replace("{question}", question), add_special_tokens=False).input_ids


def _chat_cot(tokenizer, question: str) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "template chat-cot needs a tokenizer with a chat template; choose qwen25-math-cot or plain "
            "(train: data.template=..., eval: --template ...)"
        )
    messages = [{"role": "system", "content": COT_SYSTEM}, {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


def _plain(tokenizer, question: str) -> list[int]:
    return tokenizer(question, add_special_tokens=True).input_ids


_RENDER = {"qwen25-math-cot": _qwen_cot, "chat-cot": _chat_cot, "plain": _plain}


def prompt_ids(name: str, tokenizer, question: str) -> list[int]:
    """Token ids of the prompt for one question under template `name`."""
    check_template(name)
    return _RENDER[name](tokenizer, question)
