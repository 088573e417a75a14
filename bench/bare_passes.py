"""The bare model on one step's own tokens: what the same passes cost with no trainer around them.

The floor of `realistic_table.py` is arithmetic (FLOPs at the measured matmul rate, bytes at the measured copy
bandwidth). This is the other yardstick: the Hugging Face model itself, run on exactly the rollout a step of
ours produced, in the same length-grouped micro-batches, with nothing of ours in the loop:

- forward: the decoder trunk under no_grad, then the LM head at the positions that predict response tokens
  (what the reference pass needs, without the reward math);
- update: the same with gradients, gradient checkpointing on as in the trainer, the response tokens' log-probs
  (float32 log-softmax + gather, the whole [N, V] at once) summed into a loss, and backward (no optimizer step);
- decode: the model's own forward for one token per row over a static cache is what our decoder is; its
  bound is the weight read, reported by `realistic_step.py`'s `decode` part.

Our reference and update phases divided by these say how much the trainer adds; these divided by the
arithmetic floor say how far the model's own kernels (HF attention, unfused norms and activations) are from the
hardware. Used by `realistic_step.py` (part `ours`, the last measured step's rollout).
"""

from __future__ import annotations

import torch
from grpo_step import timed  # bench/ is on sys.path (realistic_step.py, the only caller)


def response_logits(model, batch) -> torch.Tensor:
    """The trunk once, the LM head at the response-predicting positions only: [response tokens, V]."""
    hidden_BTD = model.get_decoder()(
        input_ids=batch.input_ids_BT,
        attention_mask=batch.decoder_mask(),
        position_ids=batch.position_ids_BT,
        use_cache=False,
    ).last_hidden_state
    index_BLD = batch.predictor_index_BL[..., None].expand(-1, -1, hidden_BTD.shape[-1])
    return model.get_output_embeddings()(hidden_BTD.gather(1, index_BLD)[batch.response_mask_BL])


def bare_passes(
    model,
    prompt_ids,
    response_ids,
    pad_id: int,
    forward_micro_batch: int,
    update_micro_batch: int,
    repeat: int = 2,
) -> dict:
    """Seconds for the bare forward and forward+backward over the rollout's length-grouped micro-batches of at
    most `forward_micro_batch` / exactly `update_micro_batch` rows (the trainer's reference and update
    groupings), best of `repeat`."""
    from endo_rl.rl import rollout as rl

    device = next(model.parameters()).device
    lengths = rl.sequence_lengths(prompt_ids, response_ids)

    def batches(groups: list[list[int]]) -> list:
        return [rl.packed(prompt_ids, response_ids, r, pad_id, device) for r in groups]

    # as the trainer groups them: padding-aware for the no-grad pass, fixed size for the update
    forward_batches = batches(rl.padding_aware_micro_batches(lengths, forward_micro_batch))
    update_batches = batches(rl.micro_batches(lengths, update_micro_batch))

    @torch.no_grad()
    def forward():
        for batch in forward_batches:
            response_logits(model, batch)

    def update():
        for batch in update_batches:
            z_NV = response_logits(model, batch)
            targets_N1 = batch.response_ids_BL[batch.response_mask_BL][:, None]
            z_NV.float().log_softmax(-1).gather(-1, targets_N1).sum().backward()
        model.zero_grad(set_to_none=True)

    was_training = model.training
    model.train()  # gradient checkpointing is active in train mode only (dropout is 0 in these models)
    try:
        return {
            "bare_forward_s": min(timed(forward, device.type, repeat, warmup=0)),
            "bare_update_s": min(timed(update, device.type, repeat, warmup=0)),
        }
    finally:
        model.train(was_training)
