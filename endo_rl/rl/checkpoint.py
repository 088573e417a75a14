"""Step checkpoints that are either complete or absent, and the final Hugging Face export.

    OUTPUT_DIR/checkpoints/step-N/   model.safetensors (policy + value head), optimizer, scheduler,
                                     random_states_<rank>.pkl (python, numpy, torch, cuda), trainer_state.json
    OUTPUT_DIR/final/                the policy in Hugging Face format (LoRA merged, or the adapter alone)

A checkpoint is written to `checkpoints/.tmp-step-N/` and renamed to `step-N/` only when every rank has
finished writing and `trainer_state.json` (the data position, counters and the run's config) is in place; a
rename within one directory is atomic, so a run killed mid-save leaves a stray temp dir, never a half
checkpoint that resume would pick. Only the newest `train.keep_last` checkpoints are kept; older ones are
renamed to `.old-step-N/` before they are deleted. `final/` is written to `.tmp-final/` and renamed the same way.

A failed write (on a full disk the libraries raise OSError, safetensors' SafetensorError, torch's RuntimeError
"file write failed" or tokenizers' bare Exception) removes the temp dir and raises a UserError naming the path;
the previous checkpoints are untouched. An error that is not the disk's (no errno and free space left) is
re-raised as it is: it is a bug, not a full disk.

Resume reads the newest step whose files all open (`broken_files`); a truncated or unreadable newest step is
named and the next older intact one is used.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator

from endo_rl.core.errors import UserError
from endo_rl.rl import distributed, run_lock

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
STATE_KEYS = ("step", "skipped_steps", "data")
LOW_SPACE_BYTES = 8 * 2**20
"""Below this much free space after a failed write (no errno), the failure is taken to be a full disk."""


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints whose save finished (renamed to step-N with their state file), oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def check_output_dir(output_dir: str, resume: bool) -> Path:
    """Create output_dir, prove it writable and lock it (run_lock) before any model is loaded; refuse to
    overwrite checkpoints. The caller releases the lock when the run ends."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"output_dir {output_dir} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output_dir {output_dir} is not writable: {err.strerror or err}") from err
    run_lock.acquire(path)  # before the checkpoint check: a running run may be writing its first one
    if not resume and complete_checkpoints(path):
        run_lock.release(path)
        raise UserError(
            f"output_dir {output_dir} already holds checkpoints: set resume=true to continue that run, "
            "or choose another output_dir"
        )
    return path


def disk_error(err: BaseException, where: Path) -> str | None:
    """Why a write under `where` failed when it is the file system's fault (full, read-only, I/O); else None."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.strerror or str(err)
    existing = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if free < LOW_SPACE_BYTES:
        return f"No space left on device ({free // 1024} KiB free on that file system)"
    return None


def _write_collectively(accelerator: Accelerator, tmp: Path, write: Callable[[], None]) -> str | None:
    """Run `write` on every rank; a disk error on any rank is reported on all (None: every rank succeeded)."""
    reason = None
    try:
        write()
    except Exception as err:  # tokenizers and safetensors raise bare Exception subclasses on a full disk
        reason = disk_error(err, tmp)
        if reason is None:  # not the disk's fault: a bug, re-raised as it is
            raise
    if distributed.any_rank(accelerator, reason is not None):
        return reason or "a write failed on another process"
    return None


def save(accelerator: Accelerator, output_dir: str | Path, step: int, state: dict, keep_last: int) -> Path:
    """Write checkpoint `step` atomically (collective: call on every rank). Returns its final path."""
    root = checkpoints_dir(output_dir)
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"

    def write() -> None:
        if accelerator.is_main_process:  # even a directory needs space
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        distributed.save_state(accelerator, tmp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1), encoding="utf-8")

    reason = _write_collectively(accelerator, tmp, write)
    if reason is not None:  # disk full, quota, I/O error: the previous checkpoints are untouched
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(output_dir)
        raise UserError(
            f"cannot write checkpoint {final}: {reason}; "
            + (
                f"the previous checkpoint {previous} is intact and resume=true continues from it"
                if previous
                else "there is no earlier checkpoint"
            )
        )
    if accelerator.is_main_process:
        _publish(tmp, final)
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


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished `tmp` to `final`; an existing `final` is moved aside first and deleted after."""
    old = final.with_name(f".old-{final.name}")
    if final.exists():  # re-saving a step (e.g. the end of a resumed run that had nothing left to do)
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# ----- reading back -------------------------------------------------------------------------------------


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then exactly the data it describes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "truncated (no header)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "truncated (header cut)"
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return "corrupt header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        return f"truncated ({size} bytes, the header describes {8 + n + end})"
    return None


def _problem(path: Path) -> str | None:
    """Why one checkpoint file cannot be read (None: it opens). Cheap: torch files are memory-mapped."""
    try:
        if path.suffix == ".safetensors":
            return _safetensors_problem(path)
        if path.name == STATE_FILE:
            state = json.loads(path.read_text(encoding="utf-8"))
            missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
            return f"missing {', '.join(missing)}" if missing else None
        if path.suffix in (".bin", ".pt"):
            torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        elif path.suffix == ".pkl":
            torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        return f"unreadable ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})"
    return None


def broken_files(path: Path) -> list[str]:
    """'file: reason' for each file of checkpoint `path` that does not open (empty: intact)."""
    found = [p for p in sorted(path.rglob("*")) if p.is_file()]
    problems = [f"{p.relative_to(path)}: {why}" for p in found if (why := _problem(p)) is not None]
    if not any(p.suffix == ".safetensors" for p in found) and not (path / "pytorch_model").is_dir():
        problems.append("model.safetensors: missing")
    return problems


def newest_intact(output_dir: str | Path, rank: int, log: Callable[[str], None]) -> tuple[Path | None, dict]:
    """(path, trainer state) of the newest checkpoint whose files all open; (None, {}) when there is none.

    A broken newer checkpoint is named through `log` and skipped, and so is a missing
    `random_states_<rank>.pkl` (resume then goes on with fresh random states, said out loud). Raises UserError
    when checkpoints exist but none is intact.
    """
    candidates = complete_checkpoints(output_dir)
    for path in reversed(candidates):
        problems = broken_files(path)
        if problems:
            log(f"warning: checkpoint {path} is broken ({'; '.join(problems)}); trying the one before it")
            continue
        if not (path / f"random_states_{rank}.pkl").is_file():
            log(
                f"warning: checkpoint {path} has no random_states_{rank}.pkl: resuming with fresh random "
                "states, so this run will not reproduce an uninterrupted one"
            )
        return path, json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if candidates:
        raise UserError(
            f"no intact checkpoint in {checkpoints_dir(output_dir)} (every step-N is broken, see the warnings "
            "above); start a new run in another output_dir"
        )
    return None, {}


def load(accelerator: Accelerator, path: Path) -> dict:
    """Restore model, optimizer, scheduler and RNG states; returns the trainer state (step, data position)."""
    distributed.load_state(accelerator, path)
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


# ----- the final export ---------------------------------------------------------------------------------


def export_final(
    accelerator: Accelerator, model, out_dir: Path, tokenizer, lora_save: str | None, load_base
) -> Path:
    """Write the policy LM (no value head) in Hugging Face format (collective: call on every rank).

    `lora_save`: None (full fine-tuning), "adapter" or "merged"; `load_base()` returns a fresh base model,
    used only to merge a LoRA adapter (so the sharded training copy is never merged in place). Written to
    `.tmp-final/` and renamed, so `out_dir` is either the previous export or the complete new one.
    """
    state = distributed.full_state_dict(accelerator, model)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")

    def write() -> None:
        if not accelerator.is_main_process:
            return
        lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
        lm = distributed.unwrap(accelerator, model).lm
        if lora_save == "merged":
            lm = distributed.merge_lora(load_base(), lm, lm_state)
            lm_state = lm.state_dict()
        shutil.rmtree(tmp, ignore_errors=True)
        lm.save_pretrained(tmp, state_dict=lm_state)
        tokenizer.save_pretrained(tmp)

    reason = _write_collectively(accelerator, tmp, write)
    if reason is not None:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(out_dir.parent)
        raise UserError(
            f"cannot write the final export {out_dir}: {reason}; nothing half-written was left; the trained "
            f"weights are in checkpoint {last or '(none)'}: free space and rerun with resume=true to export again"
        )
    if accelerator.is_main_process:
        _publish(tmp, out_dir)
    accelerator.wait_for_everyone()
    return out_dir
