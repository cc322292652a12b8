"""A full disk is one line naming the disk, what is free and what was needed (issue 25: a
60-line traceback while de-quantising; SQLite's "check [database] url"; status failing too).
The disk fills by stand-in: the writer raises ENOSPC as the kernel would."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from kbsync.errors import DiskFullError

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
SAFETENSORS_ENOSPC = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def one_line(exc: BaseException) -> str:
    from kbsync.errors import KbsyncError

    assert isinstance(exc, KbsyncError)
    line = exc.one_line()
    assert "\n" not in line
    return line


def test_de_quantising_onto_a_full_disk(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kbsync.model import loading

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def full(*_a, **_k):  # type: ignore[no-untyped-def]
        raise SafetensorError(SAFETENSORS_ENOSPC)

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(model, "save_pretrained", full)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(DiskFullError) as err:
        loading.dequantised_cache(gguf, tmp_path / "state")
    line = one_line(err.value)
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert "no space left on the disk /" in line and "de-quantising m.gguf" in line and " free, about " in line
    assert f"{n_bytes / 1000:.1f} KB needed" in line or f"{n_bytes / 1e6:.1f} MB needed" in line, line
    assert err.value.__cause__ is None and err.value.__suppress_context__          # no library traceback behind it
    assert not [p for p in (tmp_path / "state" / "models").iterdir()]               # the half-written copy is gone


def test_writing_a_version_onto_a_full_disk(tiny_settings, database, make_writer, seed_capitals, monkeypatch) -> None:
    from kbsync.sync.apply import apply_pending
    from kbsync.versions.store import ModelStore

    seed_capitals(database, [("Q142", "France", "Berlin", "Paris")])

    def full(self, folder):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model-edited.safetensors"))

    monkeypatch.setattr(ModelStore, "_write_shards", full)
    with pytest.raises(DiskFullError) as err:
        apply_pending(make_writer(tiny_settings, database))
    line = one_line(err.value)
    assert "while writing model version b000001-" in line and "needed" in line and "[state] dir" in line, line


def test_sqlite_on_a_full_disk_names_the_disk_not_the_url(tmp_path: Path, monkeypatch) -> None:
    from sqlalchemy.orm import Session

    from kbsync import diskspace
    from kbsync.store import db as store_db
    from kbsync.store.events import record_event

    url = f"sqlite:///{tmp_path / 'k.db'}"
    store_db.upgrade(url)
    db = store_db.open_database(url)

    for message in ("database or disk is full", "disk I/O error"):
        def commit(self, message=message):  # type: ignore[no-untyped-def]
            raise OperationalError("INSERT INTO events ...", {}, Exception(message))

        monkeypatch.setattr(Session, "commit", commit)
        monkeypatch.setattr(diskspace, "free_bytes", lambda path: 4096)
        monkeypatch.setattr(store_db, "free_bytes", lambda path: 4096)
        with pytest.raises(DiskFullError) as err:
            with db.session() as s:
                record_event(s, "diff", run_id="full")
        line = one_line(err.value)
        assert "no space left on the disk" in line and "4.1 KB free" in line and "[database] url" not in line, line
        assert "`kbsync status`" in line
    db.dispose()


def test_a_disk_io_error_with_room_left_is_not_called_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    from sqlalchemy.orm import Session

    from kbsync.errors import DatabaseError
    from kbsync.store import db as store_db
    from kbsync.store.events import record_event

    url = f"sqlite:///{tmp_path / 'k.db'}"
    store_db.upgrade(url)
    db = store_db.open_database(url)
    monkeypatch.setattr(Session, "commit", lambda self: (_ for _ in ()).throw(
        OperationalError("INSERT", {}, Exception("disk I/O error"))))
    with pytest.raises(DatabaseError) as err:
        with db.session() as s:
            record_event(s, "diff", run_id="io")
    assert not isinstance(err.value, DiskFullError)
    db.dispose()


def test_status_works_on_a_full_disk(run_cli, tmp_path: Path, monkeypatch) -> None:
    assert run_cli("db", "upgrade").exit_code == 0
    state = str(tmp_path / ".kbsync")
    real_open = os.open

    def full_open(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
        if str(path).startswith(state) and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", full_open)
    r = run_cli("status")
    assert r.exit_code == 0 and "schema" in r.out, r.err
    r = run_cli("diff")
    assert r.exit_code == 3 and r.err.startswith("DiskFullError: no space left on the disk"), r.err
