"""Sampling inside the decode step's CUDA graph (`static.categorical`): the same draws as torch.multinomial, and on
CUDA fresh draws at every graph replay with the softmax's frequencies."""

from __future__ import annotations

import pytest
import torch
from conftest import small_qwen

from endo_rl.generation import static as static_decode
from endo_rl.generation.generator import StaticDecoderGenerator
from endo_rl.generation.sampling import SamplingConfig


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_categorical_draws_what_multinomial_draws_from_the_same_generator_state(dtype):
    probs = (torch.randn(64, 1000, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 3).softmax(-1)
    torch.manual_seed(1)
    expected = torch.multinomial(probs, 1).squeeze(-1)
    torch.manual_seed(1)
    assert torch.equal(static_decode.categorical(probs), expected)


def test_zero_probability_tokens_are_never_drawn():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).repeat(4000, 1)
    assert set(static_decode.categorical(probs).tolist()) == {1, 3}


def test_sampled_generation_is_reproducible_from_the_seed():
    model = small_qwen()
    prompts = [[5, 6, 7], [8, 9], [10]]
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0)

    def run():
        torch.manual_seed(3)
        generator = StaticDecoderGenerator(model, batch_size=4, compact_min_rows=2)
        return [c.token_ids for c in generator.generate(prompts, sampling, [1], 0)]

    first = run()
    assert run() == first and len({tuple(t) for t in first}) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_captured_sampler_draws_fresh_tokens_at_every_replay():
    """The graph's generator offset moves on at each replay: 8 replays of 4096 rows give different tokens each
    time and, together, the softmax's frequencies (standard error about 0.002)."""
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0], device="cuda").repeat(4096, 1)
    graph, tokens = static_decode.capture_cuda_graph(lambda: static_decode.sample(logits, 1.0, 1.0, 0))
    draws = []
    for _ in range(8):
        graph.replay()
        draws.append(tokens.clone())
    assert all(not torch.equal(a, b) for a, b in zip(draws, draws[1:]))
    freq = torch.bincount(torch.cat(draws), minlength=4).double() / (8 * 4096)
    torch.testing.assert_close(freq.cpu(), logits[0].double().softmax(-1).cpu(), rtol=0, atol=0.01)
