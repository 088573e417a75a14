"""Both generation backends sample from exactly the configured distribution, whatever the checkpoint ships.

The model here carries a generation_config like several chat checkpoints (repetition penalty, n-gram blocking,
minimum length, suppressed tokens, min-p, its own temperature/top-k). The HF backend must ignore all of it: its
tokens must equal those of a plain loop over full forward passes (argmax, or the same multinomial draws from
softmax(logits / T) with the same seed).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_qwen
from transformers import GenerationConfig

from endo_rl.generation import static as static_decode
from endo_rl.generation.generator import generate
from endo_rl.generation.sampling import SamplingConfig

PAD, EOS = 151643, 151645
PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15], [3]]


@pytest.fixture(scope="module")
def model():
    return make_tiny_qwen()


def chat_defaults(suppress: list[int] = (0, 1, 2)) -> GenerationConfig:
    return GenerationConfig(
        do_sample=True,
        temperature=0.3,
        top_k=3,
        top_p=0.5,
        min_p=0.2,
        repetition_penalty=5.0,
        no_repeat_ngram_size=1,
        min_new_tokens=5,
        suppress_tokens=list(suppress),
        bos_token_id=PAD,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )


@torch.no_grad()
def manual_loop(model, prompt: list[int], n: int, temperature: float, seed: int | None) -> list[int]:
    """Full forward over the whole sequence at every step; argmax or one multinomial draw per step."""
    if seed is not None:
        torch.manual_seed(seed)
    seq = list(prompt)
    for _ in range(n):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        seq.append(int(static_decode.sample(logits[None], temperature, 1.0, 0)[0]))
    return seq[len(prompt) :]


def test_hf_greedy_ignores_the_checkpoint_generation_config(model):
    want = [manual_loop(model, p, 6, 0.0, None) for p in PROMPTS]
    # the checkpoint suppresses the tokens greedy decoding picks first: inheriting it would change every row
    model.generation_config = chat_defaults(suppress=[w[0] for w in want])
    saved = model.generation_config.to_dict()
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    hf = generate(model, PROMPTS, greedy, stop_ids=[EOS], pad_id=PAD, batch_size=4, backend="hf")
    assert [c.token_ids for c in hf] == want
    assert model.generation_config.to_dict() == saved  # the model's own config is restored


def test_hf_sampling_draws_from_softmax_of_logits_over_temperature(model, temperature=0.7):
    model.generation_config = chat_defaults()
    sampling = SamplingConfig(max_new_tokens=6, temperature=temperature)
    for seed, prompt in enumerate(PROMPTS[:2]):  # one row per call: the same RNG draws as the manual loop
        torch.manual_seed(seed)
        hf = generate(model, [prompt], sampling, stop_ids=[EOS], pad_id=PAD, backend="hf")[0].token_ids
        assert hf == manual_loop(model, prompt, 6, temperature, seed)


def test_static_backend_matches_hf_on_a_model_with_chat_defaults(model):
    model.generation_config = chat_defaults()
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    hf = generate(model, PROMPTS, greedy, stop_ids=[EOS], pad_id=PAD, batch_size=4, backend="hf")
    static = generate(model, PROMPTS, greedy, stop_ids=[EOS], pad_id=PAD, batch_size=4, backend="static")
    assert [c.token_ids for c in static] == [c.token_ids for c in hf]
