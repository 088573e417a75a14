"""Training prompts: read rows, render them through a pinned template, and deal them out in a resumable order.

`data.train` is a JSONL file, a directory holding `train.jsonl`, or (for users online) a Hub dataset id. Every
prompt is tokenized once at start-up, so a prompt over `data.max_prompt_length` or a missing field is an error
naming its row before any training happens. The gold answer is the last `\\boxed{}` of `data.answer_field`
when it has one (MATH solutions), else the field as it is.

`PromptOrder` shuffles with a generator seeded by (seed, epoch) alone, so the data position (epoch, offset)
is the whole state a checkpoint needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from endo_rl.core import templates
from endo_rl.core.answers import last_boxed
from endo_rl.core.config import DataConfig
from endo_rl.core.errors import UserError
from endo_rl.core.jsonl import read_jsonl
from endo_rl.reward import text as scoring


@dataclass(frozen=True)
class Prompt:
    where: str
    """File and line (or dataset and row) the prompt came from, for error messages."""
    text: str
    prompt_ids: list[int]
    """The policy's prompt under `data.template`."""
    reward_prompt_ids: list[int] | None
    """The reward model's prompt (with `reward.endogenous.system_prompt`); None: the same as `prompt_ids`."""
    gold: str | None


def read_rows(source: str) -> list[tuple[str, dict]]:
    """(where, row) pairs from a JSONL file, a directory with train.jsonl, or a Hub dataset id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "train.jsonl"
        if not path.is_file():
            raise UserError(f"data.train: directory {source} has no train.jsonl")
    if path.is_file():
        return [(f"{path}, line {lineno}", row) for lineno, row in read_jsonl(path)]
    if not source or source.startswith((".", "/", "~")) or source.endswith(".jsonl"):
        raise UserError(
            f"data.train: {source!r} does not exist (expected a JSONL file, a directory or a Hub id)"
        )
    return _hub_rows(source)


def _hub_rows(dataset_id: str) -> list[tuple[str, dict]]:
    try:
        import datasets

        rows = datasets.load_dataset(dataset_id, split="train")
    except (ImportError, OSError, ValueError, ConnectionError) as err:
        raise UserError(f"data.train: cannot load Hub dataset {dataset_id!r}: {err}") from err
    return [(f"{dataset_id} row {i}", dict(row)) for i, row in enumerate(rows)]


def _field(row: dict, key: str, config_key: str, where: str) -> str:
    if key not in row:
        raise UserError(f"{where}: no field {key!r} (set by {config_key}); fields: {', '.join(sorted(row))}")
    value = row[key]
    if value is None or isinstance(value, (bool, dict, list)):  # would train on the text "None" or "[...]"
        raise UserError(f"{where}: field {key!r} (set by {config_key}) is {json.dumps(value)}; expected text")
    return str(value)


def load_prompts(
    cfg: DataConfig, tokenizer, reward_system_prompt: str | None = None, need_gold: bool = False
) -> list[Prompt]:
    """Read, render and check every training prompt."""
    templates.check_template(cfg.template)
    rows = read_rows(cfg.train)
    if not rows:
        raise UserError(f"data.train: {cfg.train} holds no rows")
    prompts = []
    for where, row in rows:
        text = _field(row, cfg.prompt_field, "data.prompt_field", where)
        ids = templates.prompt_ids(cfg.template, tokenizer, text)
        if len(ids) > cfg.max_prompt_length:
            raise UserError(
                f"{where}: prompt is {len(ids)} tokens, over data.max_prompt_length={cfg.max_prompt_length}"
            )
        gold = None
        if need_gold:
            answer = _field(row, cfg.answer_field, "data.answer_field", where)
            gold = last_boxed(answer) or answer.strip()
        reward_ids = None
        if reward_system_prompt is not None:
            reward_ids = scoring.chat_prompt_ids(tokenizer, text, reward_system_prompt)
        prompts.append(Prompt(where, text, ids, reward_ids, gold))
    return prompts


class PromptOrder:
    """An endless shuffled stream of row indices: a fresh permutation per epoch, seeded by (seed, epoch)."""

    def __init__(self, num_rows: int, seed: int):
        self.num_rows, self.seed = num_rows, seed
        self.epoch, self.offset = 0, 0

    def _permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_rows, generator=g).tolist()

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            perm = self._permutation()
            chunk = perm[self.offset : self.offset + n - len(out)]
            out += chunk
            self.offset += len(chunk)
            if self.offset == self.num_rows:
                self.epoch, self.offset = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "num_rows": self.num_rows, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["num_rows"] != self.num_rows:
            raise UserError(
                f"the checkpoint was written for {state['num_rows']} training rows but data.train now has "
                f"{self.num_rows}: resume with the same data"
            )
        self.epoch, self.offset = state["epoch"], state["offset"]
