"""Making written files survive a crash: one way to write a file all-or-nothing, and the fsyncs
that persist files and the directories naming them.

`durable_file(path)` is the only atomic-write helper: write to the temp path it yields; on
success the temp file is fsynced, renamed over `path`, and the folder fsynced, so after a
crash `path` holds either the old content or the new, never a torn file. `scratch_directory`
makes the temporary directories a run works in, and removes those a killed run left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Persist a directory's entries (a rename or a new file in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Persist every file under `folder`, then `folder` itself (before it is renamed into place)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


@contextlib.contextmanager
def durable_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; then fsync it, rename it over `path`, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def follow_umask(path: Path) -> None:
    """Give `path` (a file, or a folder and everything under it) the modes a plain `open` and
    `mkdir` would: 0666 / 0777 less the umask. Temp files and folders are made 0600 / 0700,
    which a copy keeps: a model exported for a separate serving user must be readable by it."""
    mask = os.umask(0)
    os.umask(mask)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def write_text_durably(path: str | Path, text: str) -> None:
    with durable_file(path) as tmp:
        tmp.write_text(text)


def scratch_directory(parent: Path | None, prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory `<parent>/<prefix><pid>-<random>`, removed with the object; the ones
    a killed process left behind (their pid no longer runs) are removed first."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
        for old in parent.glob(f"{prefix}*"):
            pid = old.name.removeprefix(prefix).split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True
