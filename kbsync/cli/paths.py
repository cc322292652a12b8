"""Output paths given on the command line, checked before any work is done.

A command that writes a file or a directory learns that it cannot (a parent that is a file,
a read-only mount, a non-empty directory) in its first second, as a one-line StateError
naming the path, not after loading a model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kbsync.errors import StateError


def _writable_parent(path: Path, what: str) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StateError(f"cannot write {what} {path}: {parent} is not a writable directory "
                         f"({exc.strerror or exc}); choose another path") from exc


def output_dir(path: Path) -> Path:
    """A directory to create (or an empty one to fill)."""
    if path.exists() and not path.is_dir():
        raise StateError(f"{path} exists and is not a directory; choose a new or empty directory")
    if path.is_dir() and any(path.iterdir()):
        raise StateError(f"{path} exists and is not empty; choose an empty or new directory")
    _writable_parent(path, "the directory")
    return path


def output_file(path: Path) -> Path:
    """A file to create or replace."""
    if path.is_dir():
        raise StateError(f"{path} is a directory; give a file name")
    _writable_parent(path, "the file")
    return path
