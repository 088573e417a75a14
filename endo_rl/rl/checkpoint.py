"""Step checkpoints that are either complete or absent, and the final Hugging Face export.

    OUTPUT_DIR/checkpoints/step-N/   model.safetensors (policy + value head), optimizer, scheduler,
                                     random_states_<rank>.pkl (python, numpy, torch, cuda), trainer_state.json
    OUTPUT_DIR/final/                the policy in Hugging Face format (LoRA merged, or the adapter alone)

A checkpoint is written to `checkpoints/.tmp-step-N/` and renamed to `step-N/` only when every rank has
finished writing and `trainer_state.json` (the data position and counters) is in place; a rename within one
directory is atomic, so a run killed mid-save leaves a stray temp dir, never a half checkpoint that resume
would pick. Only the newest `train.keep_last` checkpoints are kept; older ones are renamed to `.old-step-N/`
before they are deleted. A write error (disk full) on any rank removes the temp dir and stops every rank with
one UserError naming the checkpoint, the rank and the error (printed once, by the main process); the previous
checkpoints are untouched.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from endo_rl.core.errors import ReportedByMainProcess, UserError
from endo_rl.rl import distributed

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def check_output_dir(output_dir: str, resume: bool) -> Path:
    """Create output_dir and prove it writable before any model is loaded; refuse to overwrite checkpoints."""
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output_dir {output_dir} is not writable: {err.strerror or err}") from err
    if not resume and complete_checkpoints(path):
        raise UserError(
            f"output_dir {output_dir} already holds checkpoints: set resume=true to continue that run, "
            "or choose another output_dir"
        )
    return path


def save(accelerator: Accelerator, output_dir: str | Path, step: int, state: dict, keep_last: int) -> Path:
    """Write checkpoint `step` atomically (collective: call on every rank). Returns its final path."""
    root = checkpoints_dir(output_dir)
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # Every rank writes its own files; a write error on any one (its disk full, its directory read-only) is
    # gathered to all ranks, so every rank stops together (none waits forever at the next collective) and no
    # rank renames a checkpoint that misses another rank's files.
    errors = distributed.all_errors(accelerator, _try_write(lambda: distributed.save_state(accelerator, tmp)))
    if not errors:

        def write_state() -> None:
            (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1), encoding="utf-8")

        errors = distributed.all_errors(
            accelerator, _try_write(write_state) if accelerator.is_main_process else None
        )
    if errors:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        message = (
            f"cannot write checkpoint {final}: {'; '.join(errors)}; the previous checkpoint "
            f"{latest_checkpoint(output_dir) or '(none)'} is intact and resume=true continues from it"
        )
        raise UserError(message) if accelerator.is_main_process else ReportedByMainProcess(message)
    if accelerator.is_main_process:
        if final.exists():  # re-saving a step (e.g. the end of a resumed run that had nothing left to do)
            shutil.rmtree(final)
        tmp.rename(final)
        for debris in [*root.glob(".old-step-*"), *root.glob(".tmp-step-*")]:  # left by killed runs
            shutil.rmtree(debris, ignore_errors=True)
        # an old checkpoint is renamed out of the step-N namespace before it is deleted, so a kill during the
        # deletion never leaves a half-deleted dir that still looks complete
        for old in complete_checkpoints(output_dir)[:-keep_last]:
            trash = root / f".old-{old.name}"
            old.rename(trash)
            shutil.rmtree(trash)
    accelerator.wait_for_everyone()
    return final


def _try_write(write) -> str | None:
    """None when `write()` succeeds, else what went wrong (disk full, quota, I/O error, read-only)."""
    try:
        write()
    except OSError as err:
        return str(err.strerror or err)
    return None


def load(accelerator: Accelerator, path: Path) -> dict:
    """Restore model, optimizer, scheduler and RNG states; returns the trainer state (step, data position)."""
    distributed.load_state(accelerator, path)
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def export_final(
    accelerator: Accelerator, model, out_dir: Path, tokenizer, lora_save: str | None, load_base
) -> Path:
    """Write the policy LM (no value head) in Hugging Face format (collective: call on every rank).

    `lora_save`: None (full fine-tuning), "adapter" or "merged"; `load_base()` returns a fresh base model,
    used only to merge a LoRA adapter (so the sharded training copy is never merged in place).
    """
    state = distributed.full_state_dict(accelerator, model)
    if accelerator.is_main_process:
        lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
        lm = distributed.unwrap(accelerator, model).lm
        if lora_save == "merged":
            lm = distributed.merge_lora(load_base(), lm, lm_state)
            lm_state = lm.state_dict()
        shutil.rmtree(out_dir, ignore_errors=True)
        lm.save_pretrained(out_dir, state_dict=lm_state)
        tokenizer.save_pretrained(out_dir)
    accelerator.wait_for_everyone()
    return out_dir
