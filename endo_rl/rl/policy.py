"""The trained module: the policy LM plus (for PPO) a value head on the same trunk, as one nn.Module.

One module, so accelerate/DeepSpeed prepare a single model and optimizer, and DDP sees every gradient.
`forward` runs the decoder once, gathers the hidden states at the positions that predict response tokens and
applies the LM head to those only: the [B, T, V] logits over prompt tokens never exist.

Critic design: a linear value head V(s_h) = w . h_h + b on the policy's final hidden state (shared trunk, as in
InstructGPT-style PPO implementations), initialised to zero so values start at 0. The value loss therefore
also trains the trunk (or the LoRA adapter); `algo.ppo.vf_coef` sets its weight.

Shape legend: B batch, T sequence, L response length, D hidden, V vocab, N response tokens in the batch.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from endo_rl.core.batch import PackedBatch
from endo_rl.reward.reference import final_hidden_states, gather_response_hidden


@contextlib.contextmanager
def without_cudnn_attention():
    """SDPA without its cuDNN backend inside the block (process-wide: the autograd thread's backward and
    checkpoint recompute see it too), restored after; the trainer's reference, old-log-prob and update passes.

    cuDNN's attention builds an execution graph per new input shape and caches it. The passes' micro-batches
    have a new padded length almost every time, so they paid that build again and again: on one H200 (7B shape,
    realistic step, 2026-11-30) the device sat idle for 0.83 s of a 4.4 s update and 0.21 s of a 1.0 s reference
    pass while the host was inside cuDNN's attention forward and backward (`bench/profile_step.py`'s idle
    charges). Right-padded batches run causal attention without a mask (`PackedBatch.decoder_mask`), which
    SDPA's flash kernel serves with no per-shape setup. Decoding keeps cuDNN: its shapes are fixed per
    CUDA graph.
    """
    enabled = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(enabled)


def _hidden_size(lm: nn.Module) -> int:
    return lm.get_output_embeddings().weight.shape[1]


class PolicyModel(nn.Module):
    def __init__(self, lm: nn.Module, value_head: bool, hidden_size: int | None = None):
        super().__init__()
        self.lm = lm
        self.value_head = None
        if value_head:
            dtype = next(lm.parameters()).dtype
            self.value_head = nn.Linear(hidden_size or _hidden_size(lm), 1, dtype=dtype)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    # what TRL's unwrap_model_for_generation expects of a model: checkpointing is off while generating
    @property
    def is_gradient_checkpointing(self) -> bool:
        # what transformers' own (renamed, deprecated) property computes, read the same way in 5.17 and 5.23
        return any(getattr(m, "gradient_checkpointing", False) for m in self.lm.modules())

    def gradient_checkpointing_disable(self) -> None:
        self.lm.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def forward(self, temperature: float = 1.0, **fields) -> dict[str, torch.Tensor]:
        """Per response token: log-probs (with grad), entropy (no grad) and values; zero outside the mask.

        Log-probs and entropy are those of softmax(logits / temperature), the distribution rollouts are sampled
        from. With a value head, `final_values_B` is V(s_{H+1}), the value after each row's last token (what a
        response cut at the token limit bootstraps with). `fields` are a `PackedBatch`'s (`**vars(batch)`:
        tensors and plain values, which DDP and DeepSpeed pass through to this forward): a right-padded batch
        runs without its attention mask (`PackedBatch.decoder_mask`), a packed one needs
        `varlen.varlen_attention` around the forward and its backward.
        """
        batch = PackedBatch(**fields)
        hidden_BTD = final_hidden_states(self.lm, batch)
        hidden_ND = gather_response_hidden(hidden_BTD, batch)
        logprobs_N, entropy_N = head_logprobs(
            self.lm.get_output_embeddings(),
            hidden_ND,
            batch.response_ids_BL[batch.response_mask_BL],
            temperature=temperature,
        )
        out = {
            "logprobs_BL": _scatter(logprobs_N, batch.response_mask_BL),
            "entropy_BL": _scatter(entropy_N, batch.response_mask_BL),
        }
        if self.value_head is not None:
            values_N = self.value_head(hidden_ND.to(self.value_head.weight.dtype))[:, 0].float()
            out["values_BL"] = _scatter(values_N, batch.response_mask_BL)
            final_hidden_BD = batch.gather(hidden_BTD, batch.final_index_B).to(self.value_head.weight.dtype)
            out["final_values_B"] = self.value_head(final_hidden_BD)[:, 0].float()
        return out


HEAD_CHUNK = 1024
"""Response tokens per chunk of LM-head logits in the policy pass (1024 x 152k vocab x 4 bytes = 0.6 GB)."""


def _head_chunk(
    head: nn.Module, hidden_CD: torch.Tensor, targets_C: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    logits_CV = head(hidden_CD)
    logits_CV = logits_CV.to(torch.promote_types(logits_CV.dtype, torch.float32)) / temperature
    lse_C = logits_CV.logsumexp(-1)
    logprobs_C = logits_CV.gather(-1, targets_C[:, None])[:, 0] - lse_C
    with torch.no_grad():
        entropy_C = lse_C - (logits_CV.softmax(-1) * logits_CV).sum(-1)
    return logprobs_C, entropy_C


def head_logprobs(
    head: nn.Module,
    hidden_ND: torch.Tensor,
    targets_N: torch.Tensor,
    chunk_size: int = HEAD_CHUNK,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a|s) (with grad) and entropy (no grad) per token of softmax(logits / temperature), `chunk_size`
    rows of logits at a time.

    With gradients on, each chunk is checkpointed: only its hidden rows are kept, and its float32 logits
    are recomputed in the backward pass, so the [N, V] logits never exist at once. The head module (not its
    weight) is called so ZeRO-3 can gather it.
    """
    parts = []
    for start in range(0, hidden_ND.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        if torch.is_grad_enabled():
            parts.append(
                checkpoint(
                    _head_chunk, head, hidden_ND[rows], targets_N[rows], temperature, use_reentrant=False
                )
            )
        else:
            parts.append(_head_chunk(head, hidden_ND[rows], targets_N[rows], temperature))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _scatter(x_N: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """Flat per-token values back into response layout, zero outside the mask."""
    out_BL = torch.zeros(mask_BL.shape, dtype=x_N.dtype, device=x_N.device)
    out_BL[mask_BL] = x_N
    return out_BL
