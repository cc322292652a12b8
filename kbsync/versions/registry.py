"""A model version's life in SQL, over the files of `versions.store.ModelStore`.

    writer_lock      one writer per model (apply, rollback, verify, the daemon's apply step)
    current_version  the row SQL names current for a model
    promote          the only code that sets `is_current`: a new version becomes current
    load_current     base ⊕ the current version's deltas (sha256-checked) into the live model
    reconcile        after a crash: remove files no row names, repoint `current`
    prune            delete version directories beyond [state] keep_versions
    version_path     the directory of a version (export), SQL and files only

SQL is the truth: files are written before the transaction that names them, and `current`
(the symlink) is switched after it; `reconcile` repairs either if a process died between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.errors import StateError, VersionError
from kbsync.store.db import Database
from kbsync.store.locks import held_lock
from kbsync.store.models import Batch, ModelVersion

if TYPE_CHECKING:
    from kbsync.editing.delta import Delta
    from kbsync.versions.store import ModelStore

WRITER_WHAT = "the model's writer lock (another `kbsync apply`, rollback, verify or daemon)"


def writer_lock_name(model_key: str) -> str:
    return f"kbsync-model-writer:{model_key}"


@contextlib.contextmanager
def writer_lock(db: Database, model_key: str, state_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the model's writer lock (LockedError names its holder when another process has it)."""
    with held_lock(db, writer_lock_name(model_key), state_dir / "locks", wait_s=wait_s, what=WRITER_WHAT):
        yield


def current_version(s: Session, model_key: str) -> ModelVersion | None:
    return s.scalars(select(ModelVersion).where(ModelVersion.is_current, ModelVersion.model_key == model_key)).first()


def promote(s: Session, model_key: str, *, batch_ids: list[int], weights_sha256: str, path: Path | None,
            reason: str) -> ModelVersion:
    """Record a new version of `model_key` and make it the current one (in the caller's transaction).

    Its parent is the version that was current. After the commit the caller points the store's
    `current` link at `path` (`ModelStore.set_current`); `reconcile` does it if the caller died."""
    parent = current_version(s, model_key)
    if parent is not None:
        parent.is_current = False
    version = ModelVersion(model_key=model_key, parent_id=parent.id if parent else None, batch_ids=list(batch_ids),
                           weights_sha256=weights_sha256, path=str(path) if path else None, is_current=True,
                           reason=reason)
    s.add(version)
    s.flush()
    return version


def load_current(db: Database, store: ModelStore) -> int | None:
    """Materialise the current version into the live model; its id (None: the base model)."""
    with db.session() as s:
        current = current_version(s, store.model_key)
        if current is None:
            store.materialise([])
            store.loaded.version_id = None
            return None
        digests = dict(s.execute(select(Batch.id, Batch.delta_sha256).where(Batch.id.in_(current.batch_ids))).all())
        log = [(bid, store.load_delta(bid, digests.get(bid) or "")) for bid in current.batch_ids]
        expected, version_id = current.weights_sha256, current.id
    store.materialise(log)
    if store.weights_sha256() != expected:
        raise StateError(f"materialised weights differ from model version {version_id}'s recorded hash; "
                         "the base model changed: restore it or roll back to the base")
    store.loaded.version_id = version_id
    return version_id


def reconcile(db: Database, store: ModelStore) -> list[Path]:
    """Remove delta files and version directories that no row names; point `current` at SQL's."""
    with db.session() as s:
        deltas = [Path(p) for p in s.scalars(select(Batch.delta_path).where(Batch.model_key == store.model_key)) if p]
        versions = [Path(p) for p in s.scalars(select(ModelVersion.path)
                                               .where(ModelVersion.model_key == store.model_key)) if p]
        current = current_version(s, store.model_key)
        current_path = Path(current.path) if current and current.path else None
    return store.reconcile(deltas, versions, current_path)


def prune(db: Database, store: ModelStore, keep: int) -> list[Path]:
    """Delete version directories beyond the newest `keep` (never the current one); deltas stay."""
    removed = []
    with db.session() as s:
        rows = list(s.scalars(select(ModelVersion).where(ModelVersion.model_key == store.model_key,
                                                         ModelVersion.path.is_not(None))
                              .order_by(ModelVersion.id.desc())))
        for row in rows[keep:]:
            if row.is_current or row.path is None:
                continue
            store.remove_version(Path(row.path))
            removed.append(Path(row.path))
            row.path = None
    return removed


def version_path(db: Database, model_key: str, version_id: int | None) -> Path:
    """The directory of a model version (default: the current one of this model)."""
    return version_dir(db, model_key, version_id)[1]


def version_dir(db: Database, model_key: str, version_id: int | None) -> tuple[int, Path]:
    """(id, directory) of a model version (default: the current one of this model). The errors list
    the versions there are, since no command does."""
    with db.session() as s:
        rows = list(s.scalars(select(ModelVersion).where(ModelVersion.model_key == model_key)
                              .order_by(ModelVersion.id)))

        def listed(on_disk: bool = False) -> str:
            shown = [f"{v.id}{' (current)' if v.is_current else ''}" for v in rows
                     if not on_disk or (v.path and Path(v.path).is_dir())]
            return ", ".join(shown) or "none"

        if version_id is not None:
            row = next((v for v in rows if v.id == version_id), None)
            if row is None:
                raise VersionError(f"there is no model version {version_id} of this model; its versions: {listed()}")
        else:
            row = current_version(s, model_key)
            if row is None:
                raise VersionError("no model version yet (nothing applied); `kbsync apply` first")
        if not row.path or not Path(row.path).is_dir():
            what = "the base model (no edits) has no directory of its own" if not row.batch_ids else \
                f"model version {row.id} was pruned from disk ([state] keep_versions)"
            raise VersionError(f"{what}; versions on disk: {listed(on_disk=True)}")
        return row.id, Path(row.path)


def record_delta(batch: Batch, delta: Delta, path: Path, sha256: str) -> None:
    """A batch's delta file on its row: where it is, its digest, size and factor shapes."""
    batch.delta_path, batch.delta_sha256 = str(path), sha256
    batch.delta_bytes = path.stat().st_size
    batch.delta_shapes = {n: [list(u.shape), list(v.shape)] for n, (u, v) in delta.factors.items()} | {
        n: [list(d.shape)] for n, d in delta.dense_updates.items()}
