"""Packed micro-batches (`pack(..., "packed")`, `core.varlen`): the sequences end to end in one row, attention
per sequence, give what the right-padded batch gives (float64, tiny random Qwen2 with grouped-query attention):
reference log-probs and rewards, policy log-probs, entropy, values and their gradients (gradient checkpointing
and LoRA too), and a whole trainer step. The CPU path of the attention is checked against a brute-force loop."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import small_qwen
from test_rollout_batches import ragged
from transformers import AttentionInterface

from endo_rl.core import varlen
from endo_rl.core.batch import pack
from endo_rl.reward.reference import naive_reference_forward, reference_forward
from endo_rl.rl import rollout as rl
from endo_rl.rl.policy import PolicyModel

PAD = 0
TOL = {"rtol": 1e-10, "atol": 1e-10}


def uneven() -> tuple[list[list[int]], list[list[int]]]:
    """Ragged pairs plus the extremes: 2-token sequences (1 prompt + 1 response) beside a 70-token one."""
    prompts, responses = ragged(seed=3, n=6)
    return [[7], *prompts, [5] * 40, [9]], [[11], *responses, [13] * 30, [17]]


@contextlib.contextmanager
def counted_varlen_calls():
    """The registered varlen attention, wrapped to record what each call got (the real function still runs)."""
    calls: list[dict] = []
    real = varlen.varlen_attention_forward

    def counting(module, query, key, value, attention_mask, **kwargs):
        cu, flash = kwargs.get("cu_seq_lens_q"), varlen.uses_flash(query)
        calls.append({"mask": attention_mask, "cu": cu, "shape": tuple(query.shape), "flash": flash})
        return real(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(varlen.VARLEN, counting)
    try:
        yield calls
    finally:
        AttentionInterface.register(varlen.VARLEN, real)


def brute_attention(q_1HNd, k_1KNd, v_1KNd, bounds: list[int]) -> torch.Tensor:
    """Softmax attention written out per query position: keys of the same sequence at or before it. [1, N, H, d]."""
    H, N, d = q_1HNd.shape[1:]
    group = H // k_1KNd.shape[1]
    out = torch.zeros(1, N, H, d, dtype=q_1HNd.dtype)
    for s, e in zip(bounds[:-1], bounds[1:]):
        for t in range(s, e):
            for h in range(H):
                scores = torch.stack([q_1HNd[0, h, t] @ k_1KNd[0, h // group, j] for j in range(s, t + 1)])
                weights = (scores / d**0.5).softmax(0)
                out[0, t, h] = sum(w * v_1KNd[0, h // group, j] for w, j in zip(weights, range(s, t + 1)))
    return out


def test_the_cpu_varlen_attention_equals_a_loop_over_positions():
    torch.manual_seed(0)
    bounds = [0, 2, 9, 10, 16]
    q, k, v = torch.randn(1, 4, 16, 8, dtype=torch.float64), *torch.randn(2, 1, 2, 16, 8, dtype=torch.float64)
    cu = torch.tensor(bounds, dtype=torch.int32)
    out, weights = varlen.varlen_attention_forward(None, q, k, v, None, cu_seq_lens_q=cu, max_length_q=7)
    assert weights is None and out.shape == (1, 16, 4, 8)
    torch.testing.assert_close(out, brute_attention(q, k, v, bounds), **TOL)


def test_a_packed_batch_is_one_row_whose_predictors_point_at_the_token_before_each_response_token():
    prompts, responses = uneven()
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    batch, padded = pack(prompts, responses, PAD, "packed"), pack(prompts, responses, PAD)
    assert batch.packed and not padded.packed and batch.decoder_mask() is None
    assert batch.input_ids_BT.shape == (1, sum(lengths)) and batch.max_seqlen == max(lengths)
    assert batch.cu_seqlens_S.dtype == torch.int32 and batch.cu_seqlens_S.tolist()[-1] == sum(lengths)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        s = int(batch.cu_seqlens_S[b])
        assert batch.input_ids_BT[0, s : s + lengths[b]].tolist() == p + r
        assert batch.position_ids_BT[0, s : s + lengths[b]].tolist() == list(range(lengths[b]))
        assert int(batch.final_index_B[b]) == s + lengths[b] - 1
    for b_ in (batch, padded):  # the token after each predictor position is the response token it scores
        mask = b_.response_mask_BL
        after = b_.input_ids_BT.flatten()[b_.flat_index(b_.predictor_index_BL)[mask] + 1]
        assert torch.equal(after, b_.response_ids_BL[mask])
    inputs = batch.to("cpu").decoder_inputs()
    assert inputs["cu_seq_lens_q"] is inputs["cu_seq_lens_k"] and inputs["max_length_q"] == max(lengths)
    assert "cu_seq_lens_q" not in padded.decoder_inputs()


@pytest.mark.parametrize("forward", [reference_forward, naive_reference_forward])
def test_packed_reference_equals_padded_and_calls_the_varlen_attention_without_a_mask(forward):
    model = small_qwen()
    prompts, responses = uneven()
    bootstrap_B = torch.arange(len(prompts)) % 2 == 0
    padded = forward(model, pack(prompts, responses, PAD), 0.7, temperature=0.6, bootstrap_B=bootstrap_B)
    batch = pack(prompts, responses, PAD, "packed")
    with counted_varlen_calls() as calls, varlen.varlen_attention(model):
        got = forward(model, batch, 0.7, temperature=0.6, bootstrap_B=bootstrap_B)
    for name in ("token_rewards_BL", "logprobs_BL", "rewards_B", "final_lse_B"):
        torch.testing.assert_close(getattr(got, name), getattr(padded, name), **TOL)
    assert len(calls) == model.config.num_hidden_layers
    assert all(c["mask"] is None and c["cu"] is batch.cu_seqlens_S and c["shape"][0] == 1 for c in calls)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_a_packed_batch_outside_the_varlen_attention_is_an_error():
    prompts, responses = uneven()
    with pytest.raises(RuntimeError, match="varlen_attention"):
        reference_forward(small_qwen(), pack(prompts, responses, PAD, "packed"), 1.0)


def test_varlen_attention_is_restored_after_an_error_and_reaches_a_peft_models_config():
    from peft import LoraConfig, get_peft_model

    lm = get_peft_model(small_qwen(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    policy = PolicyModel(lm, value_head=False)
    with pytest.raises(ValueError, match="boom"), varlen.varlen_attention(policy):
        assert lm.get_decoder().layers[0].self_attn.config._attn_implementation == varlen.VARLEN
        raise ValueError("boom")
    assert lm.get_decoder().layers[0].self_attn.config._attn_implementation == "sdpa"
    with varlen.varlen_attention(policy, enabled=False):
        assert lm.get_decoder().config._attn_implementation == "sdpa"


def policy_outputs_and_grads(policy: PolicyModel, batch, temperature: float = 0.8):
    """Forward and backward of a loss on every output, inside the varlen attention when the batch is packed."""
    policy.zero_grad()
    with varlen.varlen_attention(policy, batch.packed):
        out = policy(**vars(batch), temperature=temperature)
        loss = (out["logprobs_BL"] * torch.linspace(-1, 1, out["logprobs_BL"].shape[1])).sum()
        if "values_BL" in out:
            loss = loss + out["values_BL"].square().sum() + out["final_values_B"].sum()
        loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_packed_policy_forward_and_gradients_equal_padded(checkpointing):
    policy = PolicyModel(small_qwen(), value_head=True)
    with torch.no_grad():
        policy.value_head.weight.normal_()  # zero-initialized: a nonzero head makes the values depend on the trunk
    if checkpointing:
        policy.gradient_checkpointing_enable({"use_reentrant": False})
        policy.train()  # transformers checkpoints the layers only in training mode
    prompts, responses = uneven()
    want, want_grads = policy_outputs_and_grads(policy, pack(prompts, responses, PAD))
    with counted_varlen_calls() as calls:
        got, got_grads = policy_outputs_and_grads(policy, pack(prompts, responses, PAD, "packed"))
    layers = policy.lm.config.num_hidden_layers
    assert len(calls) == layers * (2 if checkpointing else 1)  # the recompute ran the varlen attention again
    for name in ("logprobs_BL", "entropy_BL", "values_BL", "final_values_B"):
        torch.testing.assert_close(got[name], want[name], **TOL)
    assert got_grads.keys() == want_grads.keys() and len(got_grads) == len(list(policy.parameters()))
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], **TOL)


def test_packed_lora_gradients_equal_padded():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    policy = PolicyModel(get_peft_model(small_qwen(), config), value_head=False)
    prompts, responses = uneven()
    want, want_grads = policy_outputs_and_grads(policy, pack(prompts, responses, PAD))
    got, got_grads = policy_outputs_and_grads(policy, pack(prompts, responses, PAD, "packed"))
    torch.testing.assert_close(got["logprobs_BL"], want["logprobs_BL"], **TOL)
    assert got_grads.keys() == want_grads.keys() and all("lora_" in n for n in got_grads)
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], **TOL)


def test_packed_no_grad_passes_equal_padded_and_cap_rows_only():
    model = small_qwen()
    policy = PolicyModel(model, value_head=True)
    with torch.no_grad():
        policy.value_head.weight.normal_()
    prompts, responses = uneven()
    args = (prompts, responses, PAD)
    with counted_varlen_calls() as calls:
        got = rl.reference_pass(model, *args, 0.5, batch_size=3, pack_sequences=True)
        got_policy = rl.policy_pass(policy, "cpu", *args, batch_size=3, temperature=0.7, pack_sequences=True)
    assert len(calls) == 2 * 3 * model.config.num_hidden_layers  # 9 rows in 3 micro-batches, two passes
    want = rl.reference_pass(model, *args, 0.5, batch_size=3)
    want_policy = rl.policy_pass(policy, "cpu", *args, batch_size=3, temperature=0.7)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL)
    assert got_policy.keys() == want_policy.keys()
    for key, value in got_policy.items():
        torch.testing.assert_close(value, want_policy[key], **TOL)
    # the fewest micro-batches, rows in order, the remainder first (as padding_aware_micro_batches breaks ties)
    assert rl.packed_micro_batches(7, 3) == [[0], [1, 2, 3], [4, 5, 6]]
    assert rl.packed_micro_batches(7, 3, min_rows=2) == [[0, 1], [2, 3], [4, 5, 6]]


def test_a_trainer_step_with_packed_sequences_gives_the_same_metrics(tiny_model_dir, tmp_path):
    """The GRPO/PPO debug recipe's first step (reference, old-log-prob and update passes, gradient
    checkpointing on) with and without packing: the same rollout, the same metrics up to float32 rounding."""
    from test_train import tiny_cfg
    from test_train_updates import EIGHT, first_row

    from endo_rl.rl.trainer import run

    rows, calls = [], {}
    for pack_sequences in ("false", "true"):
        out = tmp_path / pack_sequences
        args = [*EIGHT, f"train.pack_sequences={pack_sequences}", "model.gradient_checkpointing=true"]
        with counted_varlen_calls() as calls[pack_sequences]:
            run(tiny_cfg(tiny_model_dir, out, *args))
        rows.append(first_row(out))
    assert not calls["false"] and calls["true"]
    assert all(c["mask"] is None and c["cu"] is not None for c in calls["true"])
    timings = ("time/", "tokens_per_s", "step_time_s")
    keys = [k for k in rows[0] if not k.startswith(timings) and isinstance(rows[0][k], float)]
    assert {"loss", "grad_norm", "kl", "entropy", "reward/endogenous"} <= set(keys), keys
    for key in keys:
        assert rows[1][key] == pytest.approx(rows[0][key], rel=1e-4, abs=1e-6), key
