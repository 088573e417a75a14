"""Issue 11 in the trainer: PPO mini-batches (the clip binds), clip fractions as token shares, truncated responses
(bootstrap / mask / terminal), log-probs at the sampling temperature. Tiny random Qwen2 on CPU; its responses
never stop, so every response of these runs is truncated at generation.max_new_tokens."""

from __future__ import annotations

import pytest
import torch
from test_train import tiny_cfg, weights

from endo_rl.core.errors import UserError
from endo_rl.rl import distributed
from endo_rl.rl import rollout as rl
from endo_rl.rl.run_log import read_metrics
from endo_rl.rl.trainer import Trainer, run

EIGHT = ["train.max_steps=1", "train.save_every=0", "reward.correctness.weight=0", "train.prompts_per_step=4"]
"""One step of 4 prompts x 2 responses = 8 sequences, micro-batches of 2."""


def first_row(out) -> dict:
    return read_metrics(out / "metrics.jsonl")[0]


@pytest.mark.parametrize("mini, binds", [(None, False), (2, True)])
def test_mini_batches_make_the_clip_bind(tiny_model_dir, tmp_path, mini, binds):
    """One optimizer step per rollout: the ratio is exactly 1 and nothing clips (plain policy gradient). Four
    mini-batches of 2 with a large step: from the second on, the policy has moved and the clip binds."""
    args = [*EIGHT, f"train.mini_batch_size={mini if mini else 'null'}", "train.lr=0.05"]
    run(tiny_cfg(tiny_model_dir, tmp_path, *args))
    row = first_row(tmp_path)
    assert (row["clip_fraction"] > 0) == binds, row["clip_fraction"]
    assert 0 <= row["clip_fraction"] <= 1 and 0 <= row["value_clip_fraction"] <= 1


def test_mini_batch_loss_and_gradient_invariant_to_micro_batch_size(tiny_model_dir, tmp_path):
    """Two mini-batches of 4: micro-batches of 4 and of 1 (gradient accumulation) give the same step."""
    rows = []
    for mbs in (4, 1):
        args = [*EIGHT, "train.mini_batch_size=4", f"train.micro_batch_size={mbs}", "algo.loss_agg=seq_mean"]
        run(tiny_cfg(tiny_model_dir, tmp_path / f"mbs{mbs}", *args))
        rows.append(first_row(tmp_path / f"mbs{mbs}"))
    for name in ("loss", "policy_loss", "value_loss", "grad_norm", "clip_fraction", "kl", "entropy"):
        assert rows[0][name] == pytest.approx(rows[1][name], rel=1e-4, abs=1e-6), name


def test_mini_batch_size_must_divide_the_step(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match=r"train.mini_batch_size=3 must divide the 8 sequences"):
        tiny_cfg(tiny_model_dir, tmp_path, *EIGHT, "train.mini_batch_size=3")


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean"])
def test_clip_fractions_are_token_shares(tiny_model_dir, tmp_path, agg):
    """Rollout-time log-probs and values shifted on known rows; one optimizer step, after the only forward, so
    the update sees the old pass's weights.
    The clip fractions must be the share of tokens where the clip is active, under both aggregations."""
    trainer = Trainer(tiny_cfg(tiny_model_dir, tmp_path, *EIGHT, f"algo.loss_agg={agg}"))
    prompts = trainer._next_prompts()
    with distributed.gathered_for_generation(trainer.model, trainer.accelerator) as policy:
        rollout = trainer.collect(policy, prompts)
    trainer.score(rollout, prompts)
    trainer.assign_advantages(rollout)
    shifted_B = torch.tensor([True, False, True, True, False, False, True, False])
    mask, adv = rollout.loss_mask_BL, rollout.advantages_BL
    values, returns = rollout.old_values_BL, rollout.returns_BL
    # ratio e > 1 + eps: the clip is active where A > 0; V_old = V + 1: the clipped value is V + 0.8
    rollout.old_logprobs_BL = rollout.old_logprobs_BL - shifted_B[:, None].float()
    rollout.old_values_BL = values + shifted_B[:, None].float()
    want_clip = (mask & shifted_B[:, None] & (adv > 0)).sum() / mask.sum()
    value_clipped = (values + 0.8 - returns) ** 2 > (values - returns) ** 2
    want_value_clip = (mask & shifted_B[:, None] & value_clipped).sum() / mask.sum()
    assert 0 < want_clip < 1 and 0 < want_value_clip < 1
    stats = trainer.update(rollout, trainer.pad_id, trainer.guard, 1)
    assert stats["clip_fraction"] == pytest.approx(want_clip.item(), abs=1e-9)
    assert stats["value_clip_fraction"] == pytest.approx(want_value_clip.item(), abs=1e-9)


def test_ppo_bootstraps_truncated_responses(tiny_model_dir, tmp_path):
    """truncation=auto with a critic: the last reward of a cut response subtracts alpha * logsumexp(z_{H+1}) and
    GAE continues with V(s_{H+1}); log-probs and the KL are those of softmax(z / T)."""
    cfg = tiny_cfg(tiny_model_dir, tmp_path, *EIGHT, "generation.temperature=0.5")
    trainer = Trainer(cfg)
    assert trainer.truncation == "bootstrap"
    prompts = trainer._next_prompts()
    with distributed.gathered_for_generation(trainer.model, trainer.accelerator) as policy:
        rollout = trainer.collect(policy, prompts)
        direct = rl.policy_pass(
            policy, "cpu", rollout.prompt_ids, rollout.response_ids, trainer.pad_id, 2, temperature=0.5
        )
    assert rollout.truncated_B.all()
    ids = (trainer.reference_lm, rollout.prompt_ids, rollout.response_ids, trainer.pad_id, 1.0, 2)
    cut_ref, cut_rewards = rl.reference_pass(*ids, temperature=0.5, bootstrap_B=rollout.truncated_B)
    raw_ref, terminal_rewards = rl.reference_pass(*ids)
    torch.testing.assert_close(rollout.endogenous_BL, cut_rewards)
    torch.testing.assert_close(rollout.ref_logprobs_BL, cut_ref)
    assert not torch.allclose(rollout.endogenous_BL, terminal_rewards)
    assert not torch.allclose(rollout.ref_logprobs_BL, raw_ref)
    torch.testing.assert_close(rollout.old_logprobs_BL, direct["logprobs_BL"])
    torch.testing.assert_close(rollout.old_final_values_B, direct["final_values_B"])


def test_grpo_masks_truncated_responses_out_of_the_loss(tiny_model_dir, tmp_path):
    """truncation=auto without a critic: every response here is truncated, so nothing is trained on."""
    grpo = [*EIGHT, "algo.name=grpo", "algo.kl_mode=loss", "train.lr=0.05"]
    final = run(tiny_cfg(tiny_model_dir, tmp_path / "mask", *grpo))
    before = weights(tiny_model_dir)
    assert all(torch.equal(before[k], v) for k, v in weights(final).items())
    assert first_row(tmp_path / "mask")["loss_token_fraction"] == 0
    final = run(tiny_cfg(tiny_model_dir, tmp_path / "terminal", *grpo, "algo.truncation=terminal"))
    assert any(not torch.equal(before[k], v) for k, v in weights(final).items())
    assert first_row(tmp_path / "terminal")["loss_token_fraction"] == 1


def test_bootstrap_needs_a_critic(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, *EIGHT, "algo.name=grpo", "algo.truncation=bootstrap")
    with pytest.raises(UserError, match="algo.truncation.*critic"):
        Trainer(cfg)
