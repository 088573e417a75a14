"""The trainer's passes on right-padded batches: causal attention without the padding mask gives what the masked
attention gives (float64), and SDPA's cuDNN backend is off inside the passes only."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import small_qwen
from test_rollout_batches import ragged

from endo_rl.core.batch import pack
from endo_rl.reward.reference import reference_forward
from endo_rl.rl.policy import PolicyModel, without_cudnn_attention

PAD = 0


def test_a_right_padded_batch_drops_its_mask_and_a_left_padded_one_keeps_it():
    prompts, responses = ragged(n=4)
    right = pack(prompts, responses, PAD)
    assert right.right_padded and right.decoder_mask() is None
    assert not bool(right.attention_mask_BT.all())  # ragged: the mask it no longer needs has zeros
    left = pack(prompts, responses, PAD, padding_side="left")
    assert not left.right_padded and left.decoder_mask() is left.attention_mask_BT
    assert right.to("cpu").right_padded and not left.to("cpu").right_padded
    # positions run on through the padding: transformers sees one sequence per row, not packed ones to mask
    from transformers.masking_utils import find_packed_sequence_indices

    T = right.input_ids_BT.shape[1]
    assert torch.equal(right.position_ids_BT, torch.arange(T).expand(len(prompts), T))
    assert find_packed_sequence_indices(right.position_ids_BT) is None


def test_reference_forward_without_the_mask_equals_the_masked_one():
    model = small_qwen()
    prompts, responses = ragged(seed=1)
    batch = pack(prompts, responses, PAD)
    masked = dataclasses.replace(batch, right_padded=False)  # the same batch, decoded with its mask
    got, want = reference_forward(model, batch, 1.0), reference_forward(model, masked, 1.0)
    for name in ("token_rewards_BL", "logprobs_BL", "rewards_B", "final_lse_B"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-12)


def test_policy_forward_and_gradients_without_the_mask_equal_the_masked_ones():
    policy = PolicyModel(small_qwen(), value_head=True)
    with torch.no_grad():
        policy.value_head.weight.normal_()  # zero-initialized: a nonzero head makes the values depend on the trunk
    prompts, responses = ragged(seed=2)
    batch = pack(prompts, responses, PAD)

    def run(b):
        policy.zero_grad()
        out = policy(**vars(b))
        (out["logprobs_BL"].sum() + out["values_BL"].sum() + out["final_values_B"].sum()).backward()
        return out, [p.grad.clone() for p in policy.parameters()]

    (got, got_grads), (want, want_grads) = run(batch), run(dataclasses.replace(batch, right_padded=False))
    for name in ("logprobs_BL", "entropy_BL", "values_BL", "final_values_B"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_cudnn_attention_is_off_inside_the_block_and_restored_after_even_on_error():
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with without_cudnn_attention():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()  # the other backends stay as they were
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with pytest.raises(RuntimeError, match="boom"), without_cudnn_attention():
        raise RuntimeError("boom")
    assert torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)  # off before the block: still off after it
    try:
        with without_cudnn_attention():
            pass
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
