"""A rollout batch and the no-grad passes that fill it: policy (old log-probs, values) and reference (KL, reward).

The reference pass is `refmodel.reference_forward`: ONE forward of the frozen model gives both the reference
log-probs for the KL term and the endogenous token rewards. Only when the reward model sees a different prompt
(`reward.endogenous.system_prompt`) or is a different model (`reward.endogenous.model`) is there a second
forward, for the reward alone; the KL always uses the policy's own prompt and the reference model.

Sequences are processed in micro-batches formed by total length (sorted by prompt + response length, so each
micro-batch pads to a length close to its rows' own and little compute goes to padding), each packed to its own
length. The update cuts the sorted rows into micro-batches of a fixed size (`micro_batches`); the no-grad passes
here cut where padding plus a fixed cost per forward is least (`padding_aware_micro_batches`). The results are
put back into one [B, L] tensor per quantity in the rollout's row order (response layout, zero past each
response).

With `train.pack_sequences` each micro-batch is one packed row instead (`pack(..., "packed")`, attention per
sequence through `core.varlen`): no padding is computed, so the no-grad passes only cap the rows per
micro-batch (`packed_micro_batches`).

Shape legend: B sequences on this process, L longest response.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from endo_rl.core.batch import PackedBatch, pack
from endo_rl.core.varlen import varlen_attention
from endo_rl.reward.reference import reference_forward


@dataclass
class Rollout:
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    truncated_B: torch.Tensor
    mask_BL: torch.Tensor
    ref_logprobs_BL: torch.Tensor
    endogenous_BL: torch.Tensor
    """Endogenous token rewards r_h (unweighted)."""
    old_logprobs_BL: torch.Tensor | None = None
    """Policy log-probs at sampling time; None when the update is exactly on-policy (one pass, detach)."""
    old_values_BL: torch.Tensor | None = None
    old_final_values_B: torch.Tensor | None = None
    """The critic's V(s_{H+1}) after each response's last token, at sampling time (truncation=bootstrap)."""
    old_entropy_BL: torch.Tensor | None = None
    """Entropy of the sampling policy per token (diagnostics), from the same pass as old_logprobs_BL."""
    loss_mask_BL: torch.Tensor | None = None
    """The tokens the loss sees (`truncation.loss_mask`: without truncated responses under truncation=mask)."""
    rewards_BL: torch.Tensor | None = None
    """Total token rewards, the KL penalty included when kl_mode=reward (`rewards.compose_rewards`)."""
    reward_parts_B: dict[str, torch.Tensor] | None = None
    """Each reward source per sequence, as `rewards.compose_rewards` returned them (for the metrics)."""
    advantages_BL: torch.Tensor | None = None
    returns_BL: torch.Tensor | None = None


def micro_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Row indices in micro-batches of `size` grouped by length (rows of similar length together), each
    micro-batch's rows in their original order; the same rows as `range(n)` when there is one micro-batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [sorted(order[i : i + size]) for i in range(0, len(order), size)]


OVERHEAD_TOKENS = 2048
"""The fixed cost of one micro-batch of the no-grad passes, in token positions of compute (a rough figure, not
tuned on a GPU). Each forward reads every weight once and launches all its kernels however few rows it has, and
small matmuls run below peak. The weight read alone is small: for a 7B model on an H200, ~3.4 ms at the measured
4.1 TB/s, the matmul time of only ~200 tokens at the measured ~785 TFLOP/s (2048 tokens take ~34 ms). 2048 comes
from the whole trainer pass instead: the realistic 7B step's reference pass took 17% longer at micro-batch 32
than at 8 (median 1.29 vs 1.10 s, two runs) while computing ~60% more token positions; time = a x positions +
b x micro-batches fitted to those two points gives b ~ 1.5k positions."""


def padding_aware_micro_batches(
    lengths: list[int], max_rows: int, overhead_tokens: int = OVERHEAD_TOKENS, min_rows: int = 1
) -> list[list[int]]:
    """Row indices in micro-batches of at most `max_rows` rows (the memory cap) that minimize the compute:
    sum over micro-batches of (rows x longest length + `overhead_tokens`). The same format as `micro_batches`.
    `min_rows`: no micro-batch has fewer rows, unless all the rows are fewer or no split keeps both bounds
    (then the minimum is dropped). Compiled layers ask for 2: dynamo compiles a one-row batch apart.

    An optimal grouping is consecutive in length order (the micro-batch holding the longest row costs its
    size x that length whatever else it holds, so it best takes the next-longest rows), so an exact dynamic
    program over the sorted lengths finds it in O(n x max_rows): cost[i] = best cost of the i shortest rows.
    Ties go to the largest last micro-batch, so equal lengths give micro-batches of `max_rows` (the remainder
    among the first rows).

    For the no-grad passes only: the number of micro-batches varies with the lengths, which the update cannot
    have (its micro-batches are accelerate's gradient accumulation steps, the same count on every process)."""
    if not 1 <= min_rows <= max_rows:
        raise ValueError(f"need 1 <= min_rows <= max_rows, got min_rows={min_rows}, max_rows={max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: ties in row order
    if len(order) < min_rows:
        return [sorted(order)] if order else []
    sorted_lengths = [lengths[i] for i in order]
    cost, start = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for i in range(min_rows, len(order) + 1):  # the micro-batch ending at sorted row i - 1 starts at start[i]
        longest = sorted_lengths[i - 1]
        # min keeps the first of equal costs: the smallest j, i.e. the largest micro-batch
        start[i] = min(
            range(max(0, i - max_rows), i - min_rows + 1), key=lambda j: cost[j] + (i - j) * longest
        )
        cost[i] = cost[start[i]] + (i - start[i]) * longest + overhead_tokens
    if cost[-1] == float("inf"):  # no split keeps both bounds (3 rows in pairs, say): drop the minimum
        return padding_aware_micro_batches(lengths, max_rows, overhead_tokens)
    bounds, i = [], len(order)
    while i > 0:
        bounds.append((start[i], i))
        i = start[i]
    return [sorted(order[j:i]) for j, i in reversed(bounds)]


def packed_micro_batches(n: int, max_rows: int, min_rows: int = 1) -> list[list[int]]:
    """Rows in order, in the fewest micro-batches of at most `max_rows` (and, where a split allows it, at least
    `min_rows`) rows: packed, a micro-batch costs its tokens plus a fixed overhead, so only their count matters.
    Rows in order mix long and short ones, which evens out the tokens (the memory) per micro-batch."""
    return padding_aware_micro_batches([1] * n, max_rows, min_rows=min_rows)


def pass_options(cfg) -> dict:
    """The keyword arguments of `reference_pass` and `policy_pass` that the config sets."""
    return {
        "batch_size": logprob_micro_batch(cfg.train),
        "min_rows": logprob_min_rows(cfg.model),
        "pack_sequences": cfg.train.pack_sequences,
    }


def logprob_micro_batch(train) -> int:
    """The row cap of the no-grad passes: `train.logprob_micro_batch_size`, or the update's micro-batch size."""
    return train.logprob_micro_batch_size or train.micro_batch_size


def logprob_min_rows(model_cfg) -> int:
    """The fewest rows in a no-grad micro-batch: 2 with `model.compile_layers`, where a one-row batch would
    compile again after warm-up (dynamo specializes a size of 1); else 1."""
    return 2 if model_cfg.compile_layers else 1


def sequence_lengths(prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[int]:
    return [len(p) + len(r) for p, r in zip(prompt_ids, response_ids, strict=True)]


def computed_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    """Token positions one forward over `batches` computes, padding included (rows x longest row per batch)."""
    return sum(len(rows) * max(lengths[i] for i in rows) for rows in batches)


def scatter_rows(parts: list[torch.Tensor], batches: list[list[int]], width: int) -> torch.Tensor:
    """[b_i, l_i] tensors of each micro-batch's rows into one [B, width] tensor in row order, zero-padded
    ([b_i] tensors, one value per row, into one [B] tensor)."""
    n = sum(len(rows) for rows in batches)
    if parts[0].dim() == 1:
        out = torch.zeros(n, dtype=parts[0].dtype)
        for part, rows in zip(parts, batches, strict=True):
            out[rows] = part
        return out
    out = torch.zeros((n, width), dtype=parts[0].dtype)
    for part, rows in zip(parts, batches, strict=True):
        out[rows, : part.shape[1]] = part
    return out


def packed(
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    rows: list[int],
    pad_id: int,
    device,
    pack_sequences: bool = False,
) -> PackedBatch:
    """The micro-batch of `rows` on `device`: right-padded, or one packed row with `pack_sequences`."""
    side = "packed" if pack_sequences else "right"
    return pack([prompt_ids[i] for i in rows], [response_ids[i] for i in rows], pad_id, side).to(device)


def no_grad_micro_batches(
    lengths: list[int], batch_size: int, min_rows: int, pack_sequences: bool
) -> list[list[int]]:
    """The no-grad passes' micro-batches: row-capped when packed, padding-aware when padded; `min_rows` is
    capped at `batch_size`."""
    min_rows = min(min_rows, batch_size)
    if pack_sequences:
        return packed_micro_batches(len(lengths), batch_size, min_rows)
    return padding_aware_micro_batches(lengths, batch_size, min_rows=min_rows)


@torch.no_grad()
def reference_pass(
    lm: torch.nn.Module,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    pad_id: int,
    alpha: float,
    batch_size: int,
    temperature: float = 1.0,
    bootstrap_B: torch.Tensor | None = None,
    min_rows: int = 1,
    pack_sequences: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference log-probs at `temperature`, endogenous token rewards) from one forward per micro-batch,
    [B, L] on CPU. Rows marked in `bootstrap_B` get logsumexp(z_{H+1}) after their last token (see
    `reference_forward`). `min_rows`: see `padding_aware_micro_batches`; `pack_sequences`: see the module."""
    device = next(lm.parameters()).device
    width = max(len(r) for r in response_ids)
    # rank-local (a local frozen reference copy, or the policy whose full parameters collect() gathered): the
    # number of micro-batches may differ between processes
    lengths = sequence_lengths(prompt_ids, response_ids)
    batches = no_grad_micro_batches(lengths, batch_size, min_rows, pack_sequences)
    logprobs, rewards = [], []
    with varlen_attention(lm, pack_sequences):
        for rows in batches:
            batch = packed(prompt_ids, response_ids, rows, pad_id, device, pack_sequences)
            cut_B = None if bootstrap_B is None else bootstrap_B[rows].to(device)
            out = reference_forward(lm, batch, alpha, temperature=temperature, bootstrap_B=cut_B)
            logprobs.append(out.logprobs_BL.float().cpu())
            rewards.append(out.token_rewards_BL.float().cpu())
    return scatter_rows(logprobs, batches, width), scatter_rows(rewards, batches, width)


@torch.no_grad()
def policy_pass(
    policy: torch.nn.Module,
    device: torch.device,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    pad_id: int,
    batch_size: int,
    temperature: float = 1.0,
    min_rows: int = 1,
    pack_sequences: bool = False,
) -> dict[str, torch.Tensor]:
    """The policy's (a `PolicyModel`'s) log-probs and entropy at `temperature` (and values, with a value head)
    at sampling time, [B, L] (or [B]) on CPU. `min_rows`: see `padding_aware_micro_batches`; `pack_sequences`:
    see the module."""
    width = max(len(r) for r in response_ids)
    # rank-local (the unwrapped policy whose full parameters collect() gathered): the number of micro-batches
    # may differ between processes
    lengths = sequence_lengths(prompt_ids, response_ids)
    batches = no_grad_micro_batches(lengths, batch_size, min_rows, pack_sequences)
    parts: dict[str, list[torch.Tensor]] = {}
    with varlen_attention(policy, pack_sequences):
        for rows in batches:
            batch = packed(prompt_ids, response_ids, rows, pad_id, device, pack_sequences)
            for key, value in policy(**vars(batch), temperature=temperature).items():
                parts.setdefault(key, []).append(value.float().cpu())
    return {key: scatter_rows(values, batches, width) for key, values in parts.items()}


def response_mask(response_ids: list[list[int]]) -> torch.Tensor:
    """From lengths, never from pad ids (Qwen's pad id is its EOS)."""
    lengths = torch.tensor([len(r) for r in response_ids])
    return torch.arange(int(lengths.max()))[None] < lengths[:, None]
