"""A tiny random Qwen2 around a real tokenizer: something to train, evaluate and score in seconds on a CPU.

It learns nothing useful (its weights are random); it exists so the whole path (recipe, trainer, checkpoints,
eval) can be tried without downloading a model. The LM head is widened (std 1) so token log-probs, and hence
endogenous rewards, differ visibly between tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from endo_rl.core import models


def tiny_qwen(
    vocab_size: int,
    token_ids: tuple[int, int, int],
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """A random Qwen2 (4 heads, 2 KV heads, untied) with `token_ids` = (bos, eos, pad), its LM head widened."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    bos, eos, pad = token_ids
    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = Qwen2ForCausalLM(cfg).to(dtype)
    # random init leaves logits nearly flat; widen them so rewards differ visibly between tokens
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 1.0)
    return model.eval()


def make_tiny_qwen(tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """A random float32 Qwen2 whose vocabulary covers `tokenizer`."""
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return tiny_qwen(len(tokenizer), (bos, eos, pad), hidden, layers, seed)


def save_tiny_model(out_dir: str | Path, tokenizer_path: str, hidden: int, layers: int, seed: int) -> Path:
    """Write a tiny random model and its tokenizer to `out_dir` (loadable as model.path)."""
    tokenizer = models.load_tokenizer(tokenizer_path)
    out = Path(out_dir)
    make_tiny_qwen(tokenizer, hidden, layers, seed).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
