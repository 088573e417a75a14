"""model.compile_layers: decoder layers compiled in place give the eager outputs and gradients, compile a
bounded number of graphs over micro-batches of varying (batch, length), and keep parameter names.

CPU runs use the aot_eager backend (dynamo + autograd tracing, no C++ build); the GPU default is inductor,
which these tests do not cover.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import small_qwen
from torch._dynamo.utils import counters

from endo_rl.core import config, models
from endo_rl.core.batch import pack
from endo_rl.core.errors import UserError
from endo_rl.generation.decode_layer import layer_weights
from endo_rl.reward.reference import reference_forward
from endo_rl.rl import setup
from endo_rl.rl.policy import PolicyModel

SHAPES = [(2, 5, 4), (3, 9, 6), (1, 6, 3), (4, 3, 2), (1, 10, 2), (2, 12, 7)]
"""Micro-batches (rows, longest prompt, longest response): every one a new (B, T), one-row ones among them."""


def check_compile_count(frames: list[int]) -> None:
    """`frames[i]`: dynamo's compiled frames after micro-batch i. The first shape compiles the dynamic graphs;
    the first one-row micro-batch (SHAPES[2]) may add one set, as dynamo specialises sizes of 1; after it, the
    other (B, T) compile nothing."""
    assert frames[0] > 0  # the layers did run compiled
    assert frames[2] <= 2 * frames[0]
    assert frames[-1] == frames[2]


@pytest.fixture(autouse=True)
def aot_eager(monkeypatch):
    monkeypatch.setattr(models, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled_frames() -> int:
    return counters["frames"]["total"]


def micro_batch(rows: int, prompt: int, response: int, seed: int):
    rng = random.Random(seed)
    prompts = [[rng.randrange(2, 1000) for _ in range(rng.randint(1, prompt))] for _ in range(rows)]
    responses = [[rng.randrange(2, 1000) for _ in range(rng.randint(1, response))] for _ in range(rows)]
    prompts[0] = prompts[0] + [7] * (prompt - len(prompts[0]))  # the longest row sets T exactly
    responses[0] = responses[0] + [9] * (response - len(responses[0]))
    return pack(prompts, responses, pad_id=0)


def test_layers_compile_in_place_keeping_names_and_the_static_decoders_weights():
    eager = small_qwen(torch.float32)
    lm = copy.deepcopy(eager)
    keys = list(lm.state_dict())
    assert models.compile_layers(lm) == 2
    assert list(lm.state_dict()) == keys
    assert all(layer._compiled_call_impl is not None for layer in lm.get_decoder().layers)
    for layer, plain in zip(lm.get_decoder().layers, eager.get_decoder().layers):
        for got, want in zip(layer_weights(layer), layer_weights(plain)):
            assert (got is None and want is None) or torch.equal(got, want)


def test_reference_forward_equals_eager_and_compile_count_is_bounded_over_micro_batch_shapes():
    eager = small_qwen(torch.float32)
    lm = copy.deepcopy(eager)
    models.compile_layers(lm)
    frames = []
    with torch.no_grad():
        for i, shape in enumerate(SHAPES):
            batch = micro_batch(*shape, seed=i)
            got, want = reference_forward(lm, batch, 1.0), reference_forward(eager, batch, 1.0)
            for name in ("token_rewards_BL", "logprobs_BL", "rewards_B", "final_lse_B"):
                torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-5)
            frames.append(compiled_frames())
    check_compile_count(frames)


def policy_pass(policy: PolicyModel, batch) -> dict[str, torch.Tensor]:
    out = policy(**vars(batch))
    loss = out["logprobs_BL"].sum() + out["values_BL"].square().sum() + out["final_values_B"].sum()
    loss.backward()
    return out


def test_policy_logprobs_values_and_gradients_equal_eager_with_checkpointing():
    torch.manual_seed(0)
    eager = PolicyModel(small_qwen(torch.float32), value_head=True)
    torch.nn.init.normal_(eager.value_head.weight)  # nonzero, so the value loss reaches the trunk
    eager.lm.gradient_checkpointing_enable()
    policy = copy.deepcopy(eager)
    models.compile_layers(policy.lm)
    eager.train(), policy.train()
    frames = []
    for i, shape in enumerate(SHAPES):
        batch = micro_batch(*shape, seed=10 + i)
        got, want = policy_pass(policy, batch), policy_pass(eager, batch)
        for name in ("logprobs_BL", "values_BL", "final_values_B"):
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)
        for (name, p), q in zip(policy.named_parameters(), eager.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
        policy.zero_grad(), eager.zero_grad()
        frames.append(compiled_frames())
    check_compile_count(frames)


def test_lora_wrapped_layers_equal_eager_with_the_adapter_on_and_off():
    """PEFT's LoRA Linear inside compiled layers: the policy pass (adapter on, with gradients) and the reference
    pass (adapter disabled, the LoRA setup's reference) both match the eager model."""
    from endo_rl.core.config import LoraConfig
    from endo_rl.rl import distributed

    torch.manual_seed(0)
    eager = PolicyModel(distributed.apply_lora(small_qwen(torch.float32), LoraConfig(r=4)), value_head=True)
    for name, p in eager.named_parameters():
        if "lora_B" in name or "value_head" in name:  # nonzero, so the adapter changes the outputs
            torch.nn.init.normal_(p, std=0.1)
    eager.lm.gradient_checkpointing_enable()
    eager.lm.enable_input_require_grads()
    policy = copy.deepcopy(eager)
    models.compile_layers(policy.lm)
    assert list(policy.state_dict()) == list(eager.state_dict())
    batch = micro_batch(3, 6, 4, seed=0)
    got, want = policy_pass(policy.train(), batch), policy_pass(eager.train(), batch)
    torch.testing.assert_close(got["logprobs_BL"], want["logprobs_BL"], rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(policy.named_parameters(), eager.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad(), distributed.adapter_disabled(policy.lm), distributed.adapter_disabled(eager.lm):
        off, base = reference_forward(policy.lm, batch, 1.0), reference_forward(eager.lm, batch, 1.0)
    torch.testing.assert_close(off.logprobs_BL, base.logprobs_BL, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(off.logprobs_BL, got["logprobs_BL"].detach(), atol=1e-3)  # the adapter was on


def test_a_decoder_without_layers_list_is_refused_naming_the_key():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2, n_positions=16))
    with pytest.raises(UserError, match="model.compile_layers"):
        models.compile_layers(gpt2)


def test_zero3_is_refused_naming_the_key():
    cfg = config.load(None, ["model.compile_layers=true"])
    with pytest.raises(UserError, match="model.compile_layers.*ZeRO-3"):
        setup.check_compile_layers(cfg, zero_stage=3)
    setup.check_compile_layers(cfg, zero_stage=2)  # ZeRO-2 keeps whole parameters: allowed
    off = config.load(None, [])
    assert off.model.compile_layers is False
    setup.check_compile_layers(off, zero_stage=3)


def test_training_with_compiled_layers_checkpoints_and_resumes(tiny_model_dir, tmp_path):
    """The tiny CPU recipe (PPO, HF generate through the compiled layers) for one step, then resumed for the
    second: the checkpoint loads into the compiled policy and the export has the model's own names. Right-padded
    passes: on a CPU packed ones attend through a per-sequence loop that runs eagerly between the compiled parts
    of each layer (graph breaks: more frames; on a GPU the flash kernel compiles with the layer)."""
    from safetensors.torch import load_file
    from test_train import tiny_cfg

    from endo_rl.rl.run_log import read_metrics
    from endo_rl.rl.trainer import run

    on = ["model.compile_layers=true", "model.gradient_checkpointing=true", "train.pack_sequences=false"]
    run(tiny_cfg(tiny_model_dir, tmp_path, *on, "train.max_steps=1"))
    # the no-grad and training variants of the layer only: HF generate runs the layers eagerly (its KV cache
    # objects would recompile them per layer until dynamo's recompile limit)
    assert 0 < compiled_frames() <= 6
    final = run(tiny_cfg(tiny_model_dir, tmp_path, *on, "resume=true"))
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    trained, initial = (
        load_file(str(final / "model.safetensors")),
        load_file(str(tiny_model_dir / "model.safetensors")),
    )
    assert trained.keys() == initial.keys()
    assert all(torch.isfinite(t).all() for t in trained.values())
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_no_grad_passes_with_two_rows_at_least_compile_nothing_after_warm_up():
    """The trainer's reference pass with compiled layers (`rl.logprob_min_rows`: 2): no one-row micro-batch, which
    dynamo would compile apart after warm-up (BENCHMARKS.md section 1, run 4), over rollouts of varying sizes."""
    from endo_rl.core.config import ModelConfig
    from endo_rl.rl import rollout as rl

    lm = small_qwen(torch.float32)
    models.compile_layers(lm)
    rng = random.Random(0)
    rollouts = []
    for n in (6, 9, 5, 8):  # each splits into micro-batches of 2 or 3 rows under the cap of 3
        prompts = [[rng.randrange(2, 1000) for _ in range(rng.randint(1, 9))] for _ in range(n)]
        responses = [[rng.randrange(2, 1000) for _ in range(rng.randint(1, 12))] for _ in range(n)]
        rollouts.append((prompts, responses))
    # the last rollout's rows all of one length: at min_rows=1 the tie leaves one row alone (1 + 3 + 3)
    rollouts.append(
        ([[rng.randrange(2, 1000) for _ in range(5)] for _ in range(7)], [[9] * 8 for _ in range(7)])
    )
    one_row = [
        min(map(len, rl.padding_aware_micro_batches(rl.sequence_lengths(*r), 3))) == 1 for r in rollouts
    ]
    assert one_row[-1] and not any(one_row[:-1])  # what min_rows=1 would run: a one-row batch, after warm-up
    min_rows = rl.logprob_min_rows(ModelConfig(path="x", compile_layers=True))
    assert min_rows == 2 and rl.logprob_min_rows(ModelConfig(path="x")) == 1
    frames = []
    for prompts, responses in rollouts:
        assert (
            min(
                map(
                    len,
                    rl.padding_aware_micro_batches(rl.sequence_lengths(prompts, responses), 3, min_rows=2),
                )
            )
            >= 2
        )
        rl.reference_pass(lm, prompts, responses, 0, 1.0, batch_size=3, min_rows=min_rows)
        frames.append(compiled_frames())
    assert frames[0] > 0
    assert frames[-1] == frames[1]  # the second shape makes the batch dynamic; nothing compiles after it
