"""kbsync bootstrap --dump on small Wikidata JSON dumps (the dump's [ / , line framing, .json.gz
and .json.bz2): the first run records the snapshot (the same facts the API and RDF readers give),
a later dump reconciles (what changed is probed and queued), a bad dump is one line."""

from __future__ import annotations

import bz2
import copy
import gzip
import json
from pathlib import Path

import pytest
from sources.replay import fixture  # tests/ is on sys.path
from sqlalchemy import select

from kbsync.errors import SourceError
from kbsync.model.loading import LoadedModel, load_model
from kbsync.sources.entities import EntityDict, EntitySource
from kbsync.sources.entity_json import entities_of
from kbsync.sources.reader import ReadOptions
from kbsync.sources.timeline import parse_time
from kbsync.store import db as store_db
from kbsync.store import followed
from kbsync.store.models import EditRequestRow, KbFact
from kbsync.sync.from_settings import bootstrap_from_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "wikidata"
RELATIONS = ["P6", "P35", "P36", "P286", "P54"]
AS_OF = "2025-06-01T00:00:00Z"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(tiny_model_dir), state_dir=tmp_path_factory.mktemp("state"), device="cpu")


def recorded() -> dict[str, dict]:
    return copy.deepcopy(entities_of(json.loads((DATA / "entities.json").read_text())))


def write_dump(path: Path, entities: list[dict]) -> Path:
    """The dump's framing: '[', one entity a line ending in ',' but the last, ']'."""
    text = "[\n" + ",\n".join(json.dumps(e, separators=(",", ":")) for e in entities) + "\n]\n"
    opener = gzip.open if path.name.endswith(".gz") else bz2.open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def others(n: int) -> list[dict]:
    return [fixture.entity(f"Q{5_000_000 + i}", f"Other {i}") for i in range(n)]


def settings_for(make_settings, tmp_path: Path, url: str = ""):  # type: ignore[no-untyped-def]
    url = url or f"sqlite:///{tmp_path / 'boot.db'}"
    store_db.upgrade(url)
    return make_settings(db_url=url, relations={"enabled": RELATIONS}, kb={"source": "wikidata", "as_of": AS_OF})


def boot(settings, dump: Path, tiny, **kw):  # type: ignore[no-untyped-def]
    db = store_db.open_database(settings.database_url)
    try:
        return bootstrap_from_settings(settings, db, settings.state.dir, dump, run_id="b", loaded=tiny, **kw)
    finally:
        db.dispose()


def snapshot(settings) -> dict[tuple[str, str], str]:  # type: ignore[no-untyped-def]
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        out = {(r.subject, r.relation): r.content_hash for r in s.scalars(select(KbFact))}
    db.dispose()
    return out


def test_bootstrap_then_reconcile(make_settings, tmp_path, tiny, db_url) -> None:
    settings = settings_for(make_settings, tmp_path, db_url)
    entities = recorded()
    first = boot(settings, write_dump(tmp_path / "a.json.gz", [*others(30), *entities.values()]), tiny)
    assert (first.entities, first.watched, first.reconcile) == (42, 3, False)
    assert first.diff.probed == 0 and first.diff.new == 5       # the first time: the snapshot only
    direct = EntitySource(EntityDict(entities), ReadOptions(as_of=parse_time(AS_OF)))
    want = {(f.subject, f.relation): f.content_hash()
            for f in direct.read_all(RELATIONS, ["Q92000001", "Q92000002", "Q92000003"])}
    assert snapshot(settings) == want                          # the API's facts, from the dump
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        assert followed.position(s) == (None, "2025-05-22T10:00:00Z", "2025-05-22T10:00:00Z")
        followed.note(s, {"Q92000001": (2301000050, None)})     # the stream saw a later edit
    db.dispose()

    p6 = entities["Q92000001"]["claims"]["P6"]
    p6[1]["rank"] = "deprecated"                                # Bob Baker's statement deprecated
    p6.append(fixture.item_claim("Q92000001", "P6", "Q92000016", 9, start="+2025-05-30T00:00:00Z"))
    entities["Q92000016"] = fixture.entity("Q92000016", "Fay Fox")
    entities["Q92000001"]["lastrevid"] = 2301000050
    entities["Q92000001"]["modified"] = "2025-05-30T12:00:00Z"
    dump = write_dump(tmp_path / "b.json.bz2", [*entities.values(), *others(5)])
    second = boot(settings, dump, tiny)
    assert second.reconcile and (second.diff.changed, second.diff.probed) == (1, 1)
    assert second.diff.queued + second.diff.agree == 1
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        assert followed.waiting(s, 10) == []                    # the dump holds the edit the stream saw
        assert followed.position(s)[1] == "2025-05-30T12:00:00Z"
        queued = s.execute(select(EditRequestRow.subject, EditRequestRow.relation, EditRequestRow.target_new)).all()
    db.dispose()
    third = boot(settings, dump, tiny)                          # the same dump again: nothing new
    assert (third.diff.changed, third.diff.probed, third.diff.queued) == (0, 0, 0)
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        assert s.execute(select(EditRequestRow.subject, EditRequestRow.relation, EditRequestRow.target_new)).all() \
            == queued
    db.dispose()


def test_a_bad_dump_is_one_line_and_writes_nothing(make_settings, tmp_path, tiny) -> None:
    settings = settings_for(make_settings, tmp_path)
    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wt") as f:
        f.write('[\n{"id":"Q1","type":"item"},\n{"id": "Q2", "claims": {\n]\n')
    with pytest.raises(SourceError, match=r"bad.json.gz: line 3 is not an entity in JSON"):
        boot(settings, bad, tiny)
    with pytest.raises(SourceError, match=r"does not exist"):
        boot(settings, tmp_path / "missing.json.gz", tiny)
    with pytest.raises(SourceError, match=r"not .json.gz, .json.bz2"):
        boot(settings, DATA / "edges.ttl", tiny)
    assert snapshot(settings) == {}
