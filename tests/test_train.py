"""The trainer end to end on a tiny random Qwen2 (real Qwen2.5 vocabulary and tokenizer), on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from endo_rl.core import config
from endo_rl.rl import checkpoint
from endo_rl.rl.run_log import read_metrics
from endo_rl.rl.trainer import NonFiniteError, run

REPO = Path(__file__).resolve().parents[1]
TINY_CPU = REPO / "recipes" / "debug" / "tiny_cpu.yaml"
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"
BENCHMARKS = REPO.parent / "shared" / "benchmarks"


def tiny_cfg(model_dir: Path, out: Path, *overrides: str) -> config.ExperimentConfig:
    fixed = [f"model.path={model_dir}", f"output_dir={out}", f"data.train={PROMPTS}"]
    return config.load(TINY_CPU, [*fixed, *overrides], world_size=1)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


@pytest.fixture(scope="module")
def smoke_run(tiny_model_dir, tmp_path_factory):
    """The recipe as shipped (2 PPO steps), with wandb on in offline mode."""
    out = tmp_path_factory.mktemp("smoke")
    final = run(tiny_cfg(tiny_model_dir, out, "logging.wandb=true"))
    return out, final


def test_smoke_parameters_change_and_metrics_are_finite(smoke_run, tiny_model_dir):
    out, final = smoke_run
    before, after = weights(tiny_model_dir), weights(final)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "lm_head.weight" in changed and len(changed) > len(before) // 2
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for name in (
        "loss",
        "policy_loss",
        "value_loss",
        "kl",
        "entropy",
        "reward/total",
        "reward/endogenous",
        "reward/correctness",
        "reward/length_penalty",
        "response_length",
        "truncation_rate",
        "clip_fraction",
        "grad_norm",
        "lr",
        "tokens_per_s",
    ):
        assert all(r[name] is not None and math.isfinite(r[name]) for r in rows), name
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "config.yaml").is_file()
    saved = config.load(out / "config.yaml", world_size=1)
    assert saved.algo.name == "ppo" and saved.output_dir == str(out)


def test_smoke_checkpoints_are_complete_and_pruned(smoke_run):
    out, _ = smoke_run
    done = checkpoint.complete_checkpoints(out)
    assert [p.name for p in done] == ["step-1", "step-2"]
    state = json.loads((done[-1] / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["data"]["offset"] == 4  # 2 steps x 2 prompts
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        assert (done[-1] / name).is_file(), name


def test_smoke_wandb_offline_run_holds_the_metrics(smoke_run):
    out, _ = smoke_run
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
    for name in (
        b"reward/endogenous",
        b"reward/correctness",
        b"kl",
        b"entropy",
        b"value_loss",
        b"tokens_per_s",
    ):
        assert name in data, name


def test_resume_reproduces_the_uninterrupted_run_bitwise(tiny_model_dir, tmp_path):
    straight = run(tiny_cfg(tiny_model_dir, tmp_path / "a", "train.save_every=0"))
    run(tiny_cfg(tiny_model_dir, tmp_path / "b", "train.max_steps=1"))
    resumed = run(tiny_cfg(tiny_model_dir, tmp_path / "b", "resume=true"))
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows_a, rows_b = (
        read_metrics(tmp_path / "a" / "metrics.jsonl"),
        read_metrics(tmp_path / "b" / "metrics.jsonl"),
    )
    assert [r["step"] for r in rows_b] == [1, 2]
    assert rows_a[1]["loss"] == rows_b[1]["loss"] and rows_a[1]["reward/total"] == rows_b[1]["reward/total"]


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_loss_and_gradient_invariant_to_micro_batch_size(tiny_model_dir, tmp_path, algo):
    """One micro-batch of 4 vs 4 micro-batches of 1 with accumulation: same loss and same gradient norm."""
    common = [f"algo.name={algo}", "train.max_steps=1", "train.save_every=0", "reward.correctness.weight=0"]
    if algo == "grpo":  # the tiny model never stops: keep its truncated responses in the loss
        common += ["algo.kl_mode=loss", "algo.loss_agg=seq_mean", "algo.truncation=terminal"]
    rows = []
    for mbs in (4, 1):
        run(tiny_cfg(tiny_model_dir, tmp_path / f"mbs{mbs}", f"train.micro_batch_size={mbs}", *common))
        rows.append(read_metrics(tmp_path / f"mbs{mbs}" / "metrics.jsonl")[0])
    for name in ("loss", "policy_loss", "grad_norm", "kl", "entropy"):
        assert rows[0][name] == pytest.approx(rows[1][name], rel=1e-4, abs=1e-6), name


def test_nonfinite_rewards_stop_the_step_with_a_message(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, "reward.endogenous.weight=.nan")
    with pytest.raises(NonFiniteError, match=r"rewards, advantages at step 1"):
        run(cfg)


def test_nonfinite_skip_counts_and_keeps_weights(tiny_model_dir, tmp_path):
    final = run(
        tiny_cfg(tiny_model_dir, tmp_path, "reward.endogenous.weight=.nan", "train.on_nonfinite=skip")
    )
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["skipped_steps"] == 2
    before, after = weights(tiny_model_dir), weights(final)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_lora_trains_the_adapter_and_references_the_base(tiny_model_dir, tmp_path, save):
    from transformers import AutoModelForCausalLM

    from endo_rl.rl.trainer import Trainer

    cfg = tiny_cfg(
        tiny_model_dir,
        tmp_path,
        "lora.enabled=true",
        "lora.r=4",
        "lora.target_modules=[q_proj, v_proj]",
        f"lora.save={save}",
        "train.max_steps=1",
        "train.lr=0.05",
    )
    trainer = Trainer(cfg)
    final = trainer.fit()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lm = trainer.accelerator.unwrap_model(trainer.model).lm
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        with lm.disable_adapter():  # the reference pass: the base model, without a second copy
            torch.testing.assert_close(lm(input_ids=ids).logits, base(input_ids=ids).logits)
        assert not torch.allclose(lm(input_ids=ids).logits, base(input_ids=ids).logits)
    if save == "adapter":
        assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    else:
        merged = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(
                merged(input_ids=ids).logits, lm(input_ids=ids).logits, rtol=1e-4, atol=1e-4
            )


def test_lora_policy_generates_with_the_static_decoder(tiny_model_dir, tmp_path):
    """generation.backend=static with LoRA (forced: on CPU 'auto' picks HF): the trainer's generator decodes
    the adapter's current weights, which the optimizer moved. Its decode attention is the configured one."""
    from endo_rl.generation.generator import StaticDecoderGenerator
    from endo_rl.rl.trainer import Trainer

    lora = ["lora.enabled=true", "lora.r=4", "lora.target_modules=[q_proj, v_proj, down_proj]"]
    trainer = Trainer(
        tiny_cfg(
            tiny_model_dir,
            tmp_path,
            *lora,
            "generation.backend=static",
            "generation.decode_attention=flex",
            "train.max_steps=1",
            "train.lr=0.05",
        )
    )
    trainer.fit()
    generator, lm = trainer.generator, trainer.accelerator.unwrap_model(trainer.model).lm
    assert isinstance(generator, StaticDecoderGenerator)
    assert generator.decoders and all(d.attention == "flex" for d in generator.decoders.values())
    generator.sync_weights(lm)
    layers = lm.get_decoder().layers
    # down_proj merged on its own; q and v (wrapped) with k (not) inside the stacked Q/K/V weight and bias
    per_layer = ["down_proj", "qkv", "qkv_bias"]
    assert sorted(generator.lora.buffers) == [(i, n) for i in range(len(layers)) for n in per_layer]
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        want = []
        for module in (layer.mlp.down_proj, attn.q_proj, attn.v_proj):
            delta = module.get_delta_weight("default")  # PEFT's own scaling * B @ A
            assert delta.abs().max() > 0  # the adapter trained (B starts at zero)
            want.append(module.base_layer.weight + delta)
        torch.testing.assert_close(generator.lora.buffers[(i, "down_proj")], want[0])
        torch.testing.assert_close(
            generator.lora.buffers[(i, "qkv")], torch.cat([want[1], attn.k_proj.weight, want[2]])
        )


def test_lora_checkpoint_holds_only_trainable_tensors_and_resumes_exactly(tiny_model_dir, tmp_path):
    from endo_rl.core.errors import UserError

    lora = ["lora.enabled=true", "lora.r=4", "lora.target_modules=[q_proj, v_proj]", "lora.save=adapter"]
    run(tiny_cfg(tiny_model_dir, tmp_path / "a", *lora, "train.lr=0.05"))
    run(tiny_cfg(tiny_model_dir, tmp_path / "b", *lora, "train.lr=0.05", "train.max_steps=1"))
    run(tiny_cfg(tiny_model_dir, tmp_path / "b", *lora, "train.lr=0.05", "resume=true"))
    a = weights(checkpoint.latest_checkpoint(tmp_path / "a"))
    b = weights(checkpoint.latest_checkpoint(tmp_path / "b"))
    assert a.keys() == b.keys() and all("lora_" in k or "value_head" in k for k in a)  # no frozen base
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = weights(tmp_path / "a" / "checkpoints" / "step-1")
    assert any(not torch.equal(first[k], a[k]) for k in a if "lora_B" in k)  # the adapter did train
    other = [*lora[:2], "lora.target_modules=[q_proj]", lora[3], "resume=true", "train.max_steps=3"]
    with pytest.raises(UserError, match=r"was trained with a different lora.target_modules"):
        run(tiny_cfg(tiny_model_dir, tmp_path / "b", *other))
    # behind that config check, the checkpoint's tensor names are checked against the model's trainable ones
    from safetensors.torch import save_file

    from endo_rl.rl.distributed import _check_saved_keys

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    save_file({"1.weight": torch.zeros(2, 2), "1.bias": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    _check_saved_keys([model], str(tmp_path))  # exactly the trainable tensors: accepted
    save_file({"1.weight": torch.zeros(2, 2), "9.bias": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        UserError, match=r"it lacks 1 of the model's trainable tensors \['1.bias'\] and has 1"
    ):
        _check_saved_keys([model], str(tmp_path))


def test_resume_with_tied_embeddings(tmp_path, qwen_tokenizer):
    """safetensors keeps one name of a tied LM head / embedding pair; resuming must accept that (SmolLM2)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tied = Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=True))  # fmt: skip
    tied.save_pretrained(tmp_path / "model")
    qwen_tokenizer.save_pretrained(tmp_path / "model")
    run(tiny_cfg(tmp_path / "model", tmp_path / "run", "train.max_steps=1"))
    resumed = run(tiny_cfg(tmp_path / "model", tmp_path / "run", "resume=true"))
    assert (resumed / "config.json").is_file() and checkpoint.latest_checkpoint(
        tmp_path / "run"
    ).name == "step-2"


def test_reward_system_prompt_rescores_on_its_own_prompt_and_kl_keeps_the_policy_prompt(
    tiny_model_dir, tmp_path
):
    from endo_rl.rl import distributed
    from endo_rl.rl import rollout as rl
    from endo_rl.rl.trainer import Trainer

    cfg = tiny_cfg(
        tiny_model_dir,
        tmp_path,
        "reward.endogenous.system_prompt=Judge strictly.",
        "algo.name=grpo",
        "reward.correctness.weight=0",
    )
    trainer = Trainer(cfg)
    prompts = trainer._next_prompts()
    torch.manual_seed(0)
    with distributed.gathered_for_generation(trainer.model, trainer.accelerator) as policy:
        rollout = trainer.collect(policy, prompts)
    ref = trainer.reference_lm
    policy_ids = [p.prompt_ids for p in prompts]
    reward_ids = [p.reward_prompt_ids for p in prompts]
    assert policy_ids[0] != reward_ids[0]
    ref_logprobs, _ = rl.reference_pass(ref, policy_ids, rollout.response_ids, trainer.pad_id, 1.0, 2)
    _, rewards = rl.reference_pass(ref, reward_ids, rollout.response_ids, trainer.pad_id, 1.0, 2)
    _, policy_prompt_rewards = rl.reference_pass(
        ref, policy_ids, rollout.response_ids, trainer.pad_id, 1.0, 2
    )
    torch.testing.assert_close(rollout.ref_logprobs_BL, ref_logprobs)
    torch.testing.assert_close(rollout.endogenous_BL, rewards)
    assert not torch.allclose(rewards, policy_prompt_rewards)


def test_eval_before_and_after_are_logged_and_compared(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(
        tiny_model_dir,
        tmp_path,
        "train.max_steps=1",
        "eval.before=true",
        "eval.after=true",
        "eval.benchmarks=[math500]",
        f"eval.data_dir={BENCHMARKS}",
        "eval.limit=2",
        "eval.max_new_tokens=4",
    )
    run(cfg)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["step"] == 0 and "eval/math500/accuracy" in rows[0] and "eval/accuracy" in rows[0]
    assert "eval/math500/accuracy" in rows[-1] and rows[-1]["step"] == 1
    assert (tmp_path / "eval" / "before" / "report.json").is_file()
    assert (tmp_path / "eval" / "after" / "report.json").is_file()
    assert (tmp_path / "eval" / "comparison.png").is_file()


def test_eval_every_logs_step_0_every_n_steps_and_the_last_without_changing_training(
    tiny_model_dir, tmp_path
):
    """eval.every=2 over 3 steps: evaluations at steps 0, 2 and 3 (the last), each logged with its step and
    saved under eval/step-N; the training metrics are those of the same run without evaluations (forked RNG)."""
    evals = [
        "eval.every=2",
        "eval.benchmarks=[math500]",
        f"eval.data_dir={BENCHMARKS}",
        "eval.limit=1",
        "eval.max_new_tokens=4",
    ]
    common = ["train.max_steps=3", "train.save_every=0"]
    run(tiny_cfg(tiny_model_dir, tmp_path / "plain", *common))
    run(tiny_cfg(tiny_model_dir, tmp_path / "evals", *common, *evals))
    plain, with_evals = (read_metrics(tmp_path / d / "metrics.jsonl") for d in ("plain", "evals"))
    assert [(r["step"], "eval/math500/accuracy" in r) for r in with_evals] == [
        (0, True),
        (1, False),
        (2, True),
        (3, True),
    ]
    assert sorted(p.name for p in (tmp_path / "evals" / "eval").iterdir()) == ["step-0", "step-2", "step-3"]
    for a, b in zip(plain, with_evals[1:]):
        assert a["loss"] == b["loss"] and a["reward/total"] == b["reward/total"]


def test_eval_every_reuses_before_and_after_for_the_same_weights(tiny_model_dir, tmp_path, capsys):
    """eval.every=1 with before and after: step 0 is `before`'s weights and `after` is the last step's, so those
    two evaluations are copied, not run again; the copies are the same reports, and metrics.jsonl does not
    repeat their metrics (on a GPU run the duplicated rows for step 0 and the last step showed up)."""
    cfg = tiny_cfg(
        tiny_model_dir,
        tmp_path,
        "train.max_steps=1",
        "train.save_every=0",
        "eval.before=true",
        "eval.after=true",
        "eval.every=1",
        "eval.benchmarks=[math500]",
        f"eval.data_dir={BENCHMARKS}",
        "eval.limit=2",
        "eval.max_new_tokens=4",
    )
    run(cfg)
    out = capsys.readouterr().out
    assert "eval step-0: the same weights as eval before; its report is reused" in out
    assert "eval after: the same weights as eval step-1; its report is reused" in out
    evals = tmp_path / "eval"
    assert sorted(p.name for p in evals.iterdir() if p.is_dir()) == ["after", "before", "step-0", "step-1"]
    for copy, source in (("step-0", "before"), ("after", "step-1")):
        assert (evals / copy / "report.json").read_bytes() == (evals / source / "report.json").read_bytes()
    assert (evals / "comparison.png").is_file()
    rows = read_metrics(
        tmp_path / "metrics.jsonl"
    )  # one row of eval metrics per evaluated step, none repeated
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 1]
