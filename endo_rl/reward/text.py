"""Turning text into (prompt ids, response ids) the way `endo-rl score` does, and showing token rewards.

Two modes, shared by `score`, `rm-eval` and the TRL adapter so a user can reproduce any number by hand:
- plain: prompt and response tokenized separately without special tokens, then concatenated;
- chat: prompt = chat template of [system?, user] with the generation prompt; response = the ids of
  [system?, user, assistant] after the prompt ids, so the template's end-of-turn tokens are scored too.
"""

from __future__ import annotations

import html

from endo_rl.core.errors import UserError


def plain_ids(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return prompt_ids, response_ids


def chat_messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return [*head, {"role": "user", "content": prompt}]


def chat_prompt_ids(tokenizer, prompt: str, system: str | None, **template_kwargs) -> list[int]:
    text = tokenizer.apply_chat_template(
        chat_messages(prompt, system), tokenize=False, add_generation_prompt=True, **template_kwargs
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_ids(
    tokenizer, prompt: str, response: str, system: str | None = None, **template_kwargs
) -> tuple[list[int], list[int]]:
    """`template_kwargs` go to the chat template (e.g. TRL's chat_template_kwargs)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError("--chat needs a tokenizer with a chat template, and this tokenizer has none")
    prompt_ids = chat_prompt_ids(tokenizer, prompt, system, **template_kwargs)
    messages = [*chat_messages(prompt, system), {"role": "assistant", "content": response}]
    full_text = tokenizer.apply_chat_template(messages, tokenize=False, **template_kwargs)
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise UserError(
            "the chat rendering of the prompt is not a prefix of the rendering of prompt + response "
            "(the chat template changes earlier turns when an assistant turn is added); score without --chat"
        )
    return prompt_ids, full_ids[len(prompt_ids) :]


def token_strings(tokenizer, token_ids: list[int]) -> list[str]:
    """Each token decoded on its own, so the list lines up with the ids."""
    return [tokenizer.decode([t]) for t in token_ids]


def token_table(tokens: list[str], token_rewards: list[float], logprobs: list[float]) -> str:
    rows = [f"{'#':>4}  {'token':<20} {'reward':>10} {'logprob':>10}"]
    for i, (tok, r, lp) in enumerate(zip(tokens, token_rewards, logprobs)):
        rows.append(f"{i:>4}  {repr(tok)[1:-1][:20]:<20} {r:>10.4f} {lp:>10.4f}")
    return "\n".join(rows)


def _colour(value: float, scale: float) -> str:
    """Red for negative, green for positive, white at zero."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = int(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t < 0 else f"rgb({fade},255,{fade})"


def render_html(
    tokens: list[str],
    token_rewards: list[float],
    logprobs: list[float],
    title: str,
    prompt: str | None = None,
) -> str:
    """A self-contained page: the prompt (when given), then response tokens coloured by reward, values on hover."""
    scale = max((abs(r) for r in token_rewards), default=1.0)
    spans = []
    for i, (tok, r, lp) in enumerate(zip(tokens, token_rewards, logprobs)):
        tip = (
            f"token {i}: {tok!r}\nreward {r:.4f}\nlogprob {lp:.4f}"  # escaped once below: "\n" -> line break
        )
        spans.append(
            f'<span class="t" style="background:{_colour(r, scale)}" title="{html.escape(tip, quote=True)}">'
            f"{html.escape(tok)}</span>"
        )
    total = sum(token_rewards)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".t{white-space:pre-wrap;font-family:monospace;border-right:1px solid #ddd}"
        "</style></head><body>"
        f"<h2>{html.escape(title)}</h2><p>sequence reward <b>{total:.4f}</b> over {len(tokens)} tokens; "
        "green = positive token reward, red = negative; hover a token for its values.</p>"
        + (
            f"<h3>prompt</h3><pre style='white-space:pre-wrap;color:#555'>{html.escape(prompt)}</pre>"
            "<h3>response</h3>"
            if prompt is not None
            else ""
        )
        + f"<div>{''.join(spans)}</div></body></html>"
    )
