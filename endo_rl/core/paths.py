"""Output paths checked before the work starts, so a bad --out fails in a second, not after a model loads."""

from __future__ import annotations

from pathlib import Path

from endo_rl.core.errors import UserError


def check_writable(path: str | Path, flag: str) -> Path:
    """Create `path`'s directory if needed and prove a file can be written there; errors name `flag`."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{flag} {out} is a directory; expected a file path")
    parent = out.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(f"{flag} {out}: {blocker} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{flag} {out}: directory {parent} is not writable ({err.strerror or err})") from err
    return out
