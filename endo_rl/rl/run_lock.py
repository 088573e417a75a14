"""One training run per output_dir: OUTPUT_DIR/.lock holds the owner's host and pid while it runs.

A second run on the same output_dir is refused with a message naming the owner. A lock whose process is gone
(the run was killed or crashed) is stale and taken over. A lock written on another host cannot be checked from
here, so it is refused with the path to delete. The lock is written whole to a private file and hard-linked
into place (atomic, fails if it exists), so two runs starting at the same moment cannot both take it and a
reader never sees a half-written lock. Only the main process locks; the same process may re-enter its own lock (an
in-process caller that runs twice after an error).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from endo_rl.core.errors import UserError

LOCK_FILE = ".lock"


def _me() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _read_owner(lock: Path) -> tuple[str, int] | None:
    """(host, pid) from a lock file; None when it is unreadable or half-written (treated as stale)."""
    try:
        host, pid = lock.read_text(encoding="utf-8").split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def acquire(output_dir: str | Path) -> Path:
    """Take OUTPUT_DIR/.lock for this process, or raise UserError naming the run that holds it."""
    lock = Path(output_dir) / LOCK_FILE
    host, pid = _me()
    mine = lock.with_name(f"{LOCK_FILE}.{host}.{pid}")
    mine.write_text(f"{host} {pid}\n", encoding="utf-8")
    try:
        return _take(lock, mine, output_dir)
    finally:
        mine.unlink(missing_ok=True)


def _take(lock: Path, mine: Path, output_dir: str | Path) -> Path:
    host, pid = _me()
    for _ in range(3):
        try:
            os.link(mine, lock)
        except FileExistsError:
            owner = _read_owner(lock)
            if owner == (host, pid):
                return lock
            if owner is not None and owner[0] != host:
                raise UserError(
                    f"output_dir {output_dir} is locked by a run on host {owner[0]} (pid {owner[1]}); if no run "
                    f"is using it any more, delete {lock}"
                ) from None
            if owner is not None and _alive(owner[1]):
                raise UserError(
                    f"output_dir {output_dir} is in use by another run (pid {owner[1]}, lock file {lock}): "
                    "wait for it to finish or choose another output_dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        return lock
    raise UserError(f"cannot take the lock {lock}: other runs keep creating it")


def release(output_dir: str | Path) -> None:
    """Remove the lock if this process holds it."""
    lock = Path(output_dir) / LOCK_FILE
    if _read_owner(lock) == _me():
        lock.unlink(missing_ok=True)
