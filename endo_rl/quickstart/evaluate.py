"""Quickstart evaluation: accuracy on held-out problems per horizon H, greedy and sampled (avg over k samples).

It decodes with `endo_rl.generation.sampling.generate`, the code the trainer's rollouts use, with the same stop token and
length limit before and after RL. Set names are `H{h}_greedy` and `H{h}_sampled`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from endo_rl.generation.sampling import SamplingConfig, generate
from endo_rl.quickstart.task import AdditionProblem, is_correct
from endo_rl.quickstart.tokenizer import encode


@dataclass
class HorizonEvalSettings:
    samples: int = 4
    """k: samples per problem for the sampled (temperature 1) accuracy."""
    max_new_tokens: int = 64
    """Response length limit (the longest expert trace, H=6, is 58 tokens with its eos)."""
    batch_size: int = 256
    """Sequences per generation batch."""


@dataclass
class SetResult:
    accuracy: float
    """Fraction correct (sampled: averaged over all k samples of every problem)."""
    mean_length: float
    """Mean response length in tokens."""
    truncated: float
    """Fraction of responses that hit max_new_tokens."""
    n: int
    """Responses scored."""


def score_set(
    model,
    tokenizer,
    problems: Sequence[AdditionProblem],
    temperature: float,
    k: int,
    settings: HorizonEvalSettings,
):
    """One SetResult for `problems`, each decoded k times (k=1 for greedy)."""
    prompts = [encode(tokenizer, p.prompt) for p in problems for _ in range(k)]
    completions = generate(
        model,
        prompts,
        SamplingConfig(max_new_tokens=settings.max_new_tokens, temperature=temperature),
        stop_ids=[tokenizer.eos_token_id],
        pad_id=tokenizer.pad_token_id,
        batch_size=settings.batch_size,
    )
    correct = [
        is_correct(tokenizer.decode(c.token_ids, skip_special_tokens=True), problems[c.prompt_index // k])
        for c in completions
    ]
    return SetResult(
        accuracy=sum(correct) / len(correct),
        mean_length=sum(len(c.token_ids) for c in completions) / len(completions),
        truncated=sum(c.truncated for c in completions) / len(completions),
        n=len(completions),
    )


def evaluate_horizons(
    model, tokenizer, sets: Mapping[int, Sequence[AdditionProblem]], settings: HorizonEvalSettings, seed: int
) -> dict[str, SetResult]:
    """`{"H2_greedy": SetResult, "H2_sampled": ..., ...}` for every horizon in `sets`.

    The sampling RNG is reseeded per set, so before and after see the same random stream.
    """
    was_training = model.training
    model.eval()
    results = {}
    for h, problems in sorted(sets.items()):
        results[f"H{h}_greedy"] = score_set(model, tokenizer, problems, 0.0, 1, settings)
        torch.manual_seed(seed * 1000 + h)
        results[f"H{h}_sampled"] = score_set(model, tokenizer, problems, 1.0, settings.samples, settings)
    model.train(was_training)
    return results


def accuracies(results: Mapping[str, SetResult]) -> dict[str, float]:
    return {name: r.accuracy for name, r in results.items()}


def curve_metrics(
    model, tokenizer, sets: Mapping[int, Sequence[AdditionProblem]], settings: HorizonEvalSettings, seed: int
) -> dict[str, float]:
    """The learning-curve metrics logged during RL (`rl.eval.every`): `eval/curve/<set>/accuracy` and the mean."""
    metrics = {
        f"eval/curve/{name}/accuracy": acc
        for name, acc in accuracies(evaluate_horizons(model, tokenizer, sets, settings, seed)).items()
    }
    metrics["eval/curve/mean/accuracy"] = sum(metrics.values()) / len(metrics)
    return metrics
