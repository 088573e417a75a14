"""`endo-rl score`: the endogenous reward of one response under one model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from endo_rl.core.errors import UserError
from endo_rl.core.paths import check_writable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = """examples:
  endo-rl score --model DIR --prompt "What is 2+2?" --response "4"
  endo-rl score --model model.gguf --chat --prompt "Capital of France?" --response "Paris." --html s.html

Prints each response token's endogenous reward r_h = alpha * (z_h[a_h] - logsumexp z_{h+1}) and log-prob, and
their sum (the sequence reward); --html writes a heat map (hover a token for its values)."""
    p.add_argument("--model", required=True, help="model directory, .gguf file, or Hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (a directory)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--response", required=True)
    p.add_argument("--alpha", type=float, default=1.0, help="reward scale alpha > 0 (default 1)")
    p.add_argument("--chat", action="store_true", help="render prompt/response with the chat template")
    p.add_argument("--system", default=None, help="system prompt for the reward model (needs --chat)")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 | float64")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", default=None, metavar="OUT.html", help="write a token-reward heat map")


def run(args: argparse.Namespace) -> int:
    from endo_rl.core import models
    from endo_rl.reward import text as reward_text
    from endo_rl.reward.reference import ReferenceModel

    if not (args.alpha > 0 and math.isfinite(args.alpha)):
        raise UserError(f"--alpha must be > 0, got {args.alpha}")
    if args.html:
        check_writable(args.html, "--html")  # before the model loads
    if not args.response:
        raise UserError("--response is empty: there is nothing to score")
    if args.system is not None and not args.chat:
        raise UserError("--system needs --chat (the system prompt is part of the chat rendering)")
    device = models.check_device(args.device or models.default_device(), "--device")
    tokenizer = models.load_tokenizer(
        args.tokenizer or args.model, None if args.tokenizer else args.gguf_file
    )
    if args.chat:
        prompt_ids, response_ids = reward_text.chat_ids(tokenizer, args.prompt, args.response, args.system)
    else:
        prompt_ids, response_ids = reward_text.plain_ids(tokenizer, args.prompt, args.response)
    if not prompt_ids:
        raise UserError("--prompt is empty: at least one prompt token is needed (or use --chat)")
    model = models.load_causal_lm(args.model, args.gguf_file, args.dtype, device)
    models.check_vocab(model, tokenizer)
    scored = ReferenceModel(model, tokenizer, alpha=args.alpha).score_each([prompt_ids], [response_ids])[0]
    tokens = reward_text.token_strings(tokenizer, scored.token_ids)
    if args.html:
        page = reward_text.render_html(
            tokens, scored.token_rewards, scored.logprobs, f"endogenous reward: {args.model}", args.prompt
        )
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(
            json.dumps(
                {
                    "token_ids": scored.token_ids,
                    "tokens": tokens,
                    "token_rewards": scored.token_rewards,
                    "logprobs": scored.logprobs,
                    "reward": scored.reward,
                    "alpha": args.alpha,
                }
            )
        )
    else:
        print(reward_text.token_table(tokens, scored.token_rewards, scored.logprobs))
        print(
            f"\nreward (sum of token rewards): {scored.reward:.4f}   alpha={args.alpha}   tokens={len(tokens)}"
        )
    return 0
