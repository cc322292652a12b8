"""Read one metadata value from a GGUF file's header, without reading its tensors.

A GGUF file starts: magic "GGUF", version (u32), tensor count (u64), metadata count (u64), then
the metadata as (key: string, type: u32, value) records, strings as (length: u64, utf-8 bytes).
`general.architecture` comes first in files written by llama.cpp's converters, so checking the
architecture costs a few hundred bytes instead of the minutes de-quantising takes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from kbsync.errors import ModelError

# value type -> struct format of one scalar (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(fh: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack(fmt, data)[0]


def _left(fh: BinaryIO) -> int:
    """Bytes from the current position to the end of the file."""
    here = fh.tell()
    end = fh.seek(0, 2)
    fh.seek(here)
    return end - here


def _string(fh: BinaryIO) -> str:
    n = int(_read(fh, "<Q"))
    if n > _left(fh):  # a damaged length: reading it would ask for exabytes
        raise EOFError
    data = fh.read(n)
    if len(data) != n:
        raise EOFError
    return data.decode("utf-8", errors="replace")


def _forward(fh: BinaryIO, n: int) -> None:
    if n > _left(fh):
        raise EOFError
    fh.seek(n, 1)


def _skip(fh: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        _forward(fh, int(_read(fh, "<Q")))
    elif kind == _ARRAY:
        item, count = int(_read(fh, "<I")), int(_read(fh, "<Q"))
        if item in _SCALARS:
            _forward(fh, struct.calcsize(_SCALARS[item]) * count)
        else:
            for _ in range(count):
                _skip(fh, item)
    elif kind in _SCALARS:
        _forward(fh, struct.calcsize(_SCALARS[kind]))
    else:
        raise ValueError(f"unknown metadata type {kind}")


def gguf_value(path: Path, key: str) -> str | int | float | bool | None:
    """The scalar or string metadata value `key` of the GGUF file at `path` (None: not there)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file (no GGUF magic); check [model] path")
            version = int(_read(fh, "<I"))
            if version < 2:
                raise ModelError(f"{path} is a GGUF v{version} file; convert it with a current llama.cpp")
            _read(fh, "<Q")  # tensor count
            for _ in range(int(_read(fh, "<Q"))):
                name, kind = _string(fh), int(_read(fh, "<I"))
                if name != key:
                    _skip(fh, kind)
                elif kind == _STRING:
                    return _string(fh)
                elif kind in _SCALARS:
                    return _read(fh, _SCALARS[kind])
                else:
                    return None
    except (EOFError, ValueError) as exc:
        raise ModelError(f"{path} has a damaged GGUF header ({exc or 'it ends early'}); "
                         "download or convert the file again") from exc
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}; check [model] path") from exc
    return None
