"""The one config schema. YAML recipes override these defaults; `key.sub=value` overrides the YAML.

Load with `endo_rl.core.config.load(path, overrides)`; unknown keys and wrong types are errors naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from endo_rl.core import config_loader
from endo_rl.core.config_checks import check_batch_sizes, check_values
from endo_rl.core.errors import UserError


@dataclass
class ModelConfig:
    path: str = ""
    """Policy initialisation (and, by default, the frozen reward/reference model): a directory, .gguf, or Hub id."""
    gguf_file: str | None = None
    """GGUF file name inside `path`, when `path` is a directory."""
    tokenizer: str | None = None
    """Tokenizer directory; default: the model's."""
    dtype: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    compile_layers: bool = False
    """torch.compile each decoder layer (dynamic shapes) to fuse its norm/rotary/SiLU work; not with ZeRO-3."""


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train a LoRA adapter instead of all weights; the reference pass then runs with the adapter disabled."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters."""
    save: Literal["merged", "adapter"] = "merged"
    """Final checkpoint: adapter merged into the base weights, or the adapter alone."""


@dataclass
class EndogenousRewardConfig:
    weight: float = 1.0
    """Weight of this source in the total reward (0 turns it off)."""
    level: Literal["token", "sequence"] = "sequence"
    """Dense per-token rewards, or their sum given at the last token."""
    alpha: float = 1.0
    """Reward scale alpha > 0 of the inverse soft Bellman operator."""
    system_prompt: str | None = None
    """System prompt shown to the reward model only (the paper's promptable reward); None: policy's prompt."""
    model: str | None = None
    """Reward model; None: the frozen copy of the base model (also used as the KL reference)."""

    def __post_init__(self):
        if self.alpha <= 0:
            raise UserError(f"config key 'reward.endogenous.alpha' must be > 0, got {self.alpha}")


@dataclass
class CorrectnessRewardConfig:
    weight: float = 0.0
    """Reward `weight` when the last \\boxed{} answer verifies against the gold answer (math-verify)."""


@dataclass
class LengthPenaltyConfig:
    weight: float = 0.0
    """Subtract `weight * tokens / generation.max_new_tokens` from the sequence reward."""


@dataclass
class RewardConfig:
    endogenous: EndogenousRewardConfig = field(default_factory=EndogenousRewardConfig)
    correctness: CorrectnessRewardConfig = field(default_factory=CorrectnessRewardConfig)
    length_penalty: LengthPenaltyConfig = field(default_factory=LengthPenaltyConfig)


@dataclass
class DataConfig:
    train: str = ""
    """Training prompts: a JSONL file, a directory holding train.jsonl, or a Hub dataset id."""
    prompt_field: str = "problem"
    """Row field holding the prompt text."""
    answer_field: str = "solution"
    """Row field holding the gold answer (a \\boxed{} inside it is extracted) for the correctness reward."""
    template: str = "qwen25-math-cot"
    """Prompt template name (see `endo-rl eval --help`)."""
    max_prompt_length: int = 1024
    """Prompts longer than this (in tokens) are never cut: dropped at load time and counted, or an error."""
    overlong: Literal["drop", "error"] = "drop"
    """drop: skip prompts over max_prompt_length and print how many; error: stop, naming the first one."""


@dataclass
class SamplingConfig:
    """How responses are decoded: the one sampling settings type of rollouts, the evaluator and the CLI."""

    max_new_tokens: int = 1024
    """Response length limit; longer responses are truncated and counted."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy). RL log-probs and the KL use softmax(z / T) (T = 1 for greedy rollouts);
    the endogenous reward always uses the reference's raw logits."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    top_k: int = 0
    """Top-k sampling (0: off)."""


@dataclass
class GenerationConfig(SamplingConfig):
    """Rollout decoding: the sampling settings (keys `generation.max_new_tokens`, ...) plus how to run it."""

    batch_size: int = 64
    """Sequences per `generate` call during rollouts."""
    backend: Literal["auto", "hf", "static"] = "auto"
    """hf: transformers' generate; static: static KV cache + CUDA graphs (Llama/Qwen2-style models);
    auto: static on CUDA when the model supports it, else hf."""
    decode_attention: Literal["sdpa", "gqa", "flex"] = "sdpa"
    """The static backend's decode-step attention: sdpa | gqa | flex (endo_rl/generation/decode_attention.py)."""
    compact_min_rows: int = 8
    """The static backend drops finished rows: once the unfinished ones fit in half the rows it decodes, it
    decodes only those, in batches halved down to this many rows (0: every row to the end of the call)."""


@dataclass
class PPOConfig:
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    value_clip: float = 0.2
    """Value prediction clip range."""
    vf_coef: float = 0.5
    """Value loss weight."""
    whiten_advantages: bool = True
    """Normalize advantages to mean 0, std 1 over the whole step (all ranks)."""


@dataclass
class GRPOConfig:
    scale_rewards: bool = True
    """Divide group-centred rewards by the group's std (false: Dr. GRPO)."""


@dataclass
class AlgoConfig:
    name: Literal["ppo", "grpo"] = "grpo"
    """PPO with a value head and GAE (settings in algo.ppo), or GRPO with group-normalized rewards (algo.grpo)."""
    kl_coef: float = 0.01
    """KL penalty coefficient against the frozen reference."""
    kl_mode: Literal["reward", "loss"] = "reward"
    """KL as a per-token reward penalty, or as a loss term."""
    clip_eps: float = 0.2
    """Policy ratio clip range."""
    group_size: int = 8
    """Responses sampled per prompt."""
    loss_agg: Literal["token_mean", "seq_mean"] = "token_mean"
    """Average the loss over all tokens, or per sequence then over sequences."""
    ppo_epochs: int = 1
    """Passes over each rollout batch; each pass is one optimizer step per mini-batch (train.mini_batch_size)."""
    truncation: Literal["auto", "terminal", "bootstrap", "mask"] = "auto"
    """Responses cut at generation.max_new_tokens: terminal | bootstrap (time limit; needs a critic: ppo) | mask
    (out of the loss, as DAPO). auto: bootstrap with a critic, else mask. See endo_rl/rl/truncation.py."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """Used only when name=ppo."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Used only when name=grpo."""

    def __post_init__(self):
        if self.name == "grpo" and self.group_size < 2:
            raise UserError(f"config key 'algo.group_size' must be >= 2 for GRPO, got {self.group_size}")
        if self.group_size < 1 or self.ppo_epochs < 1:
            raise UserError("config keys 'algo.group_size' and 'algo.ppo_epochs' must be >= 1")

    @property
    def kl_in_reward(self) -> float:
        """The coefficient of the KL penalty inside the reward: kl_coef with kl_mode=reward, else 0."""
        return self.kl_coef if self.kl_mode == "reward" else 0.0


MOVED_KEYS = {  # keys that moved, old -> new: using an old key is an error naming the new one
    **{f"algo.{k}": f"algo.ppo.{k}" for k in ("gamma", "lam", "value_clip", "vf_coef", "whiten_advantages")},
    "algo.scale_rewards": "algo.grpo.scale_rewards",
}


@dataclass
class TrainConfig:
    max_steps: int = 100
    """RL steps (one rollout batch each)."""
    prompts_per_step: int = 8
    """Prompts per step (global); each gets `algo.group_size` responses."""
    mini_batch_size: int | None = None
    """Sequences per optimizer step (global): the rollout is split into mini-batches, one optimizer step each,
    rollout-time log-probs fixed (PPO as verl/OpenRLHF; the clip binds). None: one step per rollout."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass (gradient accumulation covers the rest of a mini-batch)."""
    logprob_micro_batch_size: int | None = None
    """At most this many sequences per no-grad pass (reference, PPO's old pass); None: micro_batch_size."""
    pack_sequences: bool = True
    """No-grad passes and update on packed micro-batches (one row, attention per sequence): no padding computed."""
    lr: float = 1e-6
    """Peak learning rate (AdamW)."""
    value_head_lr: float | None = None
    """PPO: learning rate of the value head (it starts at zero); None: train.lr. The shared trunk uses train.lr."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up, in optimizer steps (ppo_epochs x mini-batches of them per RL step)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    save_every: int = 0
    """Save a checkpoint every N steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept in output_dir/checkpoints."""
    on_nonfinite: Literal["error", "skip"] = "error"
    """NaN/Inf in rewards, advantages, loss or gradients: stop, or skip the batch and count it."""

    def __post_init__(self):
        for key in ("mini_batch_size", "logprob_micro_batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"config key 'train.{key}' must be >= 1 or null, got {getattr(self, key)}")
        for key in ("max_steps", "prompts_per_step", "micro_batch_size", "keep_last"):
            if getattr(self, key) < 1:
                raise UserError(f"config key 'train.{key}' must be >= 1, got {getattr(self, key)}")
        if self.save_every < 0:
            raise UserError(f"config key 'train.save_every' must be >= 0, got {self.save_every}")


@dataclass
class BenchmarkConfig(SamplingConfig):
    """What the math evaluator runs: which benchmarks, how many problems and samples, and the decoding
    (the sampling settings, greedy by default). `endo_rl.evaluation.evaluator.EvalSettings` extends it."""

    temperature: float = 0.0
    """0: greedy."""
    max_new_tokens: int | None = None
    """Response length limit; None: 1024 with extract "boxed", 2048 (the Qwen2.5-Math harness's default) with
    extract "harness"."""
    extract: Literal["boxed", "harness"] = "boxed"
    """How the final answer is found: "boxed" (last `\\boxed{}`, as the training reward) or "harness" (the
    Qwen2.5-Math harness's fallback chain and question handling, to compare with published baselines)."""
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    """Benchmark names."""
    data_dir: str | None = None
    """Local benchmark directory (layout of shared/benchmarks); None: Hub ids."""
    limit: int | None = None
    """Problems per benchmark (None: all)."""
    n_samples: int = 1
    """Samples per problem for avg@k (above 1 needs temperature > 0)."""


@dataclass
class EvalConfig(BenchmarkConfig):
    """Evaluation during training; the benchmark and decoding keys are those of `BenchmarkConfig`."""

    before: bool = False
    """Evaluate the initial policy before training."""
    after: bool = False
    """Evaluate the final policy after training (and compare with `before`)."""
    every: int = 0
    """Also evaluate at step 0, every N steps and at the last step, logged with that step (0: off)."""

    def __post_init__(self):
        if self.every < 0:
            raise UserError(f"config key 'eval.every' must be >= 0, got {self.every}")
        if (n := self.max_new_tokens) is not None and n < 1:
            raise UserError(f"config key 'eval.max_new_tokens' must be >= 1 or null, got {n}")


@dataclass
class LoggingConfig:
    wandb: bool = True
    """Log to wandb (offline mode when no API key is set)."""
    project: str = "endo_rl"
    """wandb project."""
    run_name: str | None = None
    """wandb run name; None: output_dir's name."""
    log_every: int = 1
    """Steps between log lines."""


@dataclass
class ExperimentConfig:
    output_dir: str = "outputs/run"
    """Where checkpoints, metrics.jsonl, plots and the resolved config go."""
    resume: bool = False
    """Continue from the newest complete checkpoint in output_dir."""
    seed: int = 0
    """Seeds Python, NumPy and torch on every process."""
    deterministic: bool = False
    """Deterministic GPU kernels, so a rerun or resumed run repeats exactly; slower (endo_rl/rl/determinism.py)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def world_size_from_env() -> int:
    """The number of processes `accelerate launch` / torchrun started (1 for a plain `python` run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def load(
    path: str | Path | None = None, overrides: list[str] = (), world_size: int | None = None
) -> ExperimentConfig:
    """A recipe (optional) plus `key.sub=value` overrides -> a validated ExperimentConfig; `world_size`
    (default: from the environment) is used to check the batch-size arithmetic."""
    cfg = config_loader.load(ExperimentConfig, path, overrides, MOVED_KEYS)
    check_values(cfg)
    check_batch_sizes(cfg, world_size_from_env() if world_size is None else world_size)
    return cfg
