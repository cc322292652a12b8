"""A model version's life in SQL: promote, the current version per model, prune, version_path.

No model is loaded: `prune` is given a stand-in for the model store's file removal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.errors import VersionError
from kbsync.store import db as store_db
from kbsync.store.models import ModelVersion
from kbsync.versions import registry


@pytest.fixture
def db(sqlite_url: str) -> Iterator[store_db.Database]:
    store_db.upgrade(sqlite_url)
    database = store_db.open_database(sqlite_url)
    yield database
    database.dispose()


def promote(db: store_db.Database, key: str, batch_ids: list[int], path: Path | None) -> int:
    with db.session() as s:
        return registry.promote(s, key, batch_ids=batch_ids, weights_sha256=f"sha-{key}-{batch_ids}", path=path,
                                reason="test").id


def test_promote_makes_one_version_current_per_model(db: store_db.Database, tmp_path: Path) -> None:
    v1 = promote(db, "a", [1], tmp_path)
    other = promote(db, "b", [2], tmp_path)
    v2 = promote(db, "a", [1, 3], tmp_path)
    with db.session() as s:
        current = {v.model_key: v.id for v in s.scalars(select(ModelVersion).where(ModelVersion.is_current))}
        assert current == {"a": v2, "b": other}
        assert s.get(ModelVersion, v2).parent_id == v1 and s.get(ModelVersion, v1).parent_id is None
        assert registry.current_version(s, "a").batch_ids == [1, 3]


def test_version_path_says_what_is_wrong(db: store_db.Database, tmp_path: Path) -> None:
    with pytest.raises(VersionError, match="no model version yet"):
        registry.version_path(db, "a", None)
    kept = tmp_path / "v1"
    kept.mkdir()
    v1 = promote(db, "a", [1], kept)
    v2 = promote(db, "a", [1, 2], tmp_path / "pruned")
    assert registry.version_path(db, "a", v1) == kept
    with pytest.raises(VersionError, match=f"model version {v2} was pruned"):
        registry.version_path(db, "a", None)
    with pytest.raises(VersionError, match=rf"pruned from disk .*versions on disk: {v1}$"):
        registry.version_path(db, "a", None)
    # the error lists the versions itself: no command lists them (issue 25: it named `kbsync status`)
    with pytest.raises(VersionError, match=rf"no model version 99 of this model; its versions: {v1}, {v2} \(current\)$"):
        registry.version_path(db, "a", 99)
    with pytest.raises(VersionError, match="no model version 1 of this model"):
        registry.version_path(db, "b", v1)   # another model's version
    assert VersionError.exit_code == 8


class Files:
    """Stands in for ModelStore in prune: records which directories it was told to delete."""

    model_key = "a"

    def __init__(self) -> None:
        self.removed: list[Path] = []

    def remove_version(self, path: Path) -> None:
        self.removed.append(path)


def test_prune_keeps_the_newest_and_never_the_current(db: store_db.Database, tmp_path: Path) -> None:
    paths = [tmp_path / f"v{i}" for i in range(4)]
    ids = [promote(db, "a", [i], p) for i, p in enumerate(paths)]
    promote(db, "b", [9], tmp_path / "b")                      # another model's: untouched
    with db.session() as s:                                   # a rollback made v0 current again
        for v in s.scalars(select(ModelVersion).where(ModelVersion.model_key == "a")):
            v.is_current = v.id == ids[0]
    files = Files()
    assert registry.prune(db, files, keep=2) == [paths[1]]    # type: ignore[arg-type]
    assert files.removed == [paths[1]]
    with db.session() as s:
        kept = {v.id: v.path for v in s.scalars(select(ModelVersion).where(ModelVersion.model_key == "a"))}
    assert kept == {ids[0]: str(paths[0]), ids[1]: None, ids[2]: str(paths[2]), ids[3]: str(paths[3])}
