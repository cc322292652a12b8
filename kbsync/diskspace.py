"""A full disk, said in one line: which disk, what is free, what was needed, and the fix.

    is_full(exc)                          ENOSPC / EDQUOT anywhere in the exception's chain, or
                                          the text a library makes of it (safetensors, SQLite)
    disk_full(path, doing, needed=...)    the DiskFullError to raise `from exc`

Writers that may fill a disk (the GGUF de-quantisation, version directories, delta files,
exports, SQLite) translate with these where the error enters.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from kbsync.errors import DiskFullError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full")


def is_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from, says the disk is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return True
        if any(text in str(exc).lower() for text in FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)
    return False


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path` (or the nearest existing folder above it)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(mount_point(path)).free
    except OSError:
        return None


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def disk_full(path: Path, doing: str, needed: int | None = None, fix: str = "") -> DiskFullError:
    """`DiskFullError`: no space on the disk of `path` while `doing`; `needed` bytes when known."""
    disk = mount_point(path)
    free = free_bytes(path)
    have = f"{size(free)} free" if free is not None else "free space unknown"
    want = f", about {size(needed)} needed" if needed else ""
    return DiskFullError(f"no space left on the disk {disk} (holding {path}) while {doing}: {have}{want}; "
                         f"{fix or 'free space there, or move [state] dir to a larger disk'}")
