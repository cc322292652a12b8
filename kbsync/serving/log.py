"""The active delta log of a model version, from SQL and the delta files: no model is loaded.

    version_log(db, model_key, version_id) -> VersionLog(version_id, batch_ids, deltas, path)

Each delta file is sha256-checked against its batch row, as `registry.load_current` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from kbsync.editing.delta import Delta
from kbsync.errors import StateError, VersionError
from kbsync.store.db import Database
from kbsync.store.models import Batch, ModelVersion
from kbsync.versions.registry import current_version


@dataclass
class VersionLog:
    version_id: int | None            # None: the base model (nothing applied yet)
    batch_ids: list[int]              # active batches, in order
    deltas: list[Delta]               # their deltas, in the same order
    path: Path | None                 # the version's HF directory (None: base, or pruned)

    @property
    def merged(self) -> Delta:
        """One delta equal to the sum of the log: per weight the factors side by side."""
        return Delta.merged(self.deltas)


def version_log(db: Database, model_key: str, version_id: int | None = None) -> VersionLog:
    """The deltas of a version of `model_key` (default: the current one; the base when none)."""
    with db.session() as s:
        if version_id is None:
            row = current_version(s, model_key)
        else:
            row = s.get(ModelVersion, version_id)
            if row is None or row.model_key != model_key:
                raise VersionError(f"there is no model version {version_id} of this model; "
                                   "`kbsync status` names the current one")
        if row is None:
            return VersionLog(None, [], [], None)
        ids = [int(b) for b in row.batch_ids]
        files = {bid: (path, sha) for bid, path, sha in s.execute(
            select(Batch.id, Batch.delta_path, Batch.delta_sha256).where(Batch.id.in_(ids))).all()}
        vid, path = row.id, Path(row.path) if row.path else None
    deltas = []
    for bid in ids:
        where, sha = files.get(bid, (None, None))
        if not where:
            raise StateError(f"batch {bid} of model version {vid} has no delta file recorded; "
                             "roll the batch back or restore the state directory")
        deltas.append(Delta.load(where, expected_sha256=sha))
    return VersionLog(vid, ids, deltas, path)
