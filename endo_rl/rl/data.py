"""Training prompts: read rows, render them through a pinned template, and deal them out in a resumable order.

`data.train` is a JSONL file, a directory holding `train.jsonl`, or (for users online) a Hub dataset id. Every
prompt is tokenized once at start-up. A prompt over `data.max_prompt_length` is never cut: it is dropped and
counted ("dropped 12 of 7500 prompts over 1024 tokens", as verl/OpenRLHF do), or with `data.overlong=error` it
stops the run naming its row. A missing field is an error naming its row, before any training happens.

The gold answer is the last `\\boxed{}` of `data.answer_field` when it has one (MATH solutions), else the text
after its last `####` (GSM8K, thousands separators removed), else the field as it is.

`PromptOrder` shuffles with a generator seeded by (seed, epoch) alone, so the data position (epoch, offset)
is the whole state a checkpoint needs.
"""

from __future__ import annotations

import json
import sys
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
    prompts, overlong = [], []
    for where, row in rows:
        text = _field(row, cfg.prompt_field, "data.prompt_field", where)
        ids = templates.prompt_ids(cfg.template, tokenizer, text)
        if len(ids) > cfg.max_prompt_length:
            if cfg.overlong == "error":
                raise UserError(
                    f"{where}: prompt is {len(ids)} tokens, over data.max_prompt_length={cfg.max_prompt_length} "
                    "(data.overlong=drop skips such prompts and counts them)"
                )
            overlong.append(where)
            continue
        gold = None
        if need_gold:
            answer = _field(row, cfg.answer_field, "data.answer_field", where)
            gold = gold_answer(answer)
        reward_ids = None
        if reward_system_prompt is not None:
            reward_ids = scoring.chat_prompt_ids(tokenizer, text, reward_system_prompt)
        prompts.append(Prompt(where, text, ids, reward_ids, gold))
    if overlong:
        _report_dropped(cfg, overlong, len(rows))
    return prompts


def _report_dropped(cfg: DataConfig, overlong: list[str], total: int) -> None:
    """Say how many prompts were dropped (and the first), or stop when nothing is left to train on."""
    message = (
        f"dropped {len(overlong)} of {total} prompts over {cfg.max_prompt_length} tokens "
        f"(data.max_prompt_length; first: {overlong[0]})"
    )
    if len(overlong) == total:
        raise UserError(f"data.train: every prompt is too long: {message}")
    print(f"data.train: {message}", file=sys.stderr, flush=True)


def gold_answer(answer: str) -> str:
    """MATH's last \\boxed{}, GSM8K's text after `####`, or the whole (stripped) answer."""
    if boxed := last_boxed(answer):
        return boxed
    if "####" in answer:
        return answer.split("####")[-1].strip().replace(",", "")
    return answer.strip()


def process_share(rows: list[int], world: int, rank: int, per_mini_batch: int | None) -> list[int]:
    """Process `rank`'s share of a step's prompts `rows` (the same list on every process).

    Each mini-batch's prompts (`per_mini_batch` of them; None: the whole step is one mini-batch) are split
    evenly over the processes, so the process's local rows, cut into equal slices, give it its part of every
    mini-batch: mini-batch j holds the same prompts whatever the number of processes, and a run on N processes
    takes the same optimizer steps as on one. When a mini-batch's prompts do not split evenly (a group of
    responses would be cut between processes), the step's prompts are split in N contiguous parts instead and
    mini-batches then depend on N.
    """
    per = per_mini_batch if per_mini_batch and per_mini_batch % world == 0 else len(rows)
    share: list[int] = []
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        k = len(chunk) // world
        share += chunk[rank * k : (rank + 1) * k]
    return share


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
