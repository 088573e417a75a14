"""train.logprob_micro_batch_size: the no-grad passes (reference, PPO's old log-probs/values) batch by it, and
the rollout they produce does not depend on it. Tiny random Qwen2 on CPU (PPO: the old pass runs)."""

from __future__ import annotations

import torch
from test_train import tiny_cfg

from endo_rl.core import config
from endo_rl.rl import distributed
from endo_rl.rl import rollout as rl
from endo_rl.rl.trainer import Trainer

EIGHT = ["train.max_steps=1", "train.save_every=0", "reward.correctness.weight=0", "train.prompts_per_step=4"]
"""One step of 4 prompts x 2 responses = 8 sequences, micro-batches of 2."""


def collected(model_dir, out, *overrides):
    """The rollout of one collect (same seed, so the same responses)."""
    trainer = Trainer(tiny_cfg(model_dir, out, *EIGHT, "train.micro_batch_size=2", *overrides))
    assert trainer.cfg.algo.name == "ppo"
    prompts = trainer._next_prompts()
    torch.manual_seed(0)
    with distributed.gathered_for_generation(trainer.model, trainer.accelerator) as policy:
        return trainer.collect(policy, prompts)


def test_no_grad_passes_batch_by_it_and_give_the_same_rollout(tiny_model_dir, tmp_path, monkeypatch):
    sizes: list[int] = []  # the size each pass formed its micro-batches with
    grouping = rl.padding_aware_micro_batches
    monkeypatch.setattr(
        rl,
        "padding_aware_micro_batches",
        lambda lengths, size, **kw: sizes.append(size) or grouping(lengths, size, **kw),
    )
    default = collected(tiny_model_dir, tmp_path / "a")
    assert sizes == [2, 2]  # reference pass, then the old log-prob/value pass
    wide = collected(tiny_model_dir, tmp_path / "b", "train.logprob_micro_batch_size=8")
    assert sizes == [2, 2, 8, 8]
    assert wide.response_ids == default.response_ids
    for name in ("ref_logprobs_BL", "endogenous_BL", "old_logprobs_BL", "old_values_BL", "old_entropy_BL"):
        torch.testing.assert_close(
            getattr(wide, name), getattr(default, name), rtol=1e-5, atol=1e-5, msg=name
        )


def test_unset_by_default_and_need_not_divide_the_step():
    assert config.load(None, [], world_size=1).train.logprob_micro_batch_size is None
    cfg = config.load(
        None, ["train.logprob_micro_batch_size=5"], world_size=1
    )  # 64 sequences: ragged is fine
    assert cfg.train.logprob_micro_batch_size == 5
