"""HF `generate` that samples from exactly the configured distribution, whatever the checkpoint ships.

`generate` fills every field left unset from `model.generation_config` (a checkpoint's
generation_config.json: repetition_penalty, top_k, min_p, suppressed tokens ...), which would make rollouts
come from another distribution than the one the loss assumes and than the static decoder's. Here the config
is complete and the checkpoint's defaults are swapped out for the call.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import torch
from transformers import GenerationConfig

from endo_rl.core.batch import left_pad
from endo_rl.core.config import SamplingConfig


def hf_generation_config(sampling: SamplingConfig, stop_ids: Sequence[int], pad_id: int) -> GenerationConfig:
    """A complete GenerationConfig for `sampling`: temperature, top-k, top-p and the stop tokens, nothing else.

    Every logits processor HF could add (repetition penalty, n-gram blocking, minimum length, suppressed or
    forced tokens, min-p, typical-p, ...) is left off, so the HF backend samples from the same distribution as
    the static backend and as the loss assumes.
    """
    greedy = sampling.temperature == 0
    return GenerationConfig(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        # greedy: sampling fields unset (None is not refilled from the checkpoint: see below)
        temperature=None if greedy else sampling.temperature,
        top_p=None if greedy else sampling.top_p,
        top_k=None if greedy else sampling.top_k,
        num_beams=1,
        num_return_sequences=1,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        use_cache=True,
    )


@contextlib.contextmanager
def _without_checkpoint_defaults(model: torch.nn.Module, config: GenerationConfig):
    """Make `config` the model's own generation_config for the call (on every wrapper that holds one).

    `generate` fills each field left None from `model.generation_config`, i.e. from the checkpoint's
    generation_config.json (several chat checkpoints ship repetition_penalty, top_k, min_p ...). Passing a
    config is not enough to stop that; replacing the defaults for the duration of the call is.
    """
    owners = [m for m in model.modules() if "generation_config" in vars(m)]
    saved = [vars(m)["generation_config"] for m in owners]
    for m in owners:
        m.generation_config = config
    try:
        yield
    finally:
        for m, original in zip(owners, saved, strict=True):
            m.generation_config = original


def _eager() -> contextlib.AbstractContextManager:
    """Run torch.compile'd code eagerly: decoder layers compiled for the training passes
    (`model.compile_layers`) would recompile on each layer's KV-cache state inside `generate`."""
    if not hasattr(torch.compiler, "set_stance"):  # torch < 2.6 has no stance; nothing to switch off
        return contextlib.nullcontext()
    return torch.compiler.set_stance("force_eager")


def hf_rows(model, prompts, sampling: SamplingConfig, stop_ids, pad_id: int) -> list[list[int]]:
    """HF generate on one left-padded micro-batch; the generated columns of each row."""
    config = hf_generation_config(sampling, stop_ids, pad_id)
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_id)
    with _without_checkpoint_defaults(model, copy.deepcopy(config)), _eager():
        sequences = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
    return sequences[:, input_ids.shape[1] :].tolist()
