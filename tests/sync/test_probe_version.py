"""Each probe records the model version that answered (issue 25: `probes.model_version_id` was
NULL on every row, so the dashboard labelled answers of edited versions `base`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.models import ModelVersion, Probe
from kbsync.sync.apply import apply_pending
from kbsync.sync.from_settings import diff_from_settings
from kbsync.sync.rollback import rollback

TTL = """@prefix wd: <http://www.wikidata.org/entity/> .
@prefix wdt: <http://www.wikidata.org/prop/direct/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
wd:Q1000 rdfs:label "Atlantis"@en ; wdt:P36 wd:Q5000 .
wd:Q5000 rdfs:label "Poseidonia"@en .
"""


def answered_by(db, run_id: str) -> set[int | None]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return set(s.scalars(select(Probe.model_version_id).where(Probe.run_id == run_id)))


def test_probes_name_the_version_that_answered(make_settings, make_writer, tmp_path: Path, sqlite_url: str) -> None:
    kb = tmp_path / "kb.ttl"
    kb.write_text(TTL, encoding="utf-8")
    settings = make_settings(kb={"source": "rdf", "mode": "truthy", "files": [str(kb)]},
                             relations={"enabled": ["P36"]}, probe={"max_new_tokens": 3, "sample_unchanged": 0})
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)

    def diff(run_id: str, **kw) -> None:  # type: ignore[no-untyped-def]
        diff_from_settings(settings, db, settings.state.dir, run_id=run_id, full=True, **kw)

    diff("d1")
    assert answered_by(db, "d1") == {None}                       # the base model answered
    writer = make_writer(settings, db, "a1")
    (batch,) = apply_pending(writer).batches
    with db.session() as s:
        edited = s.scalars(select(ModelVersion.id).where(ModelVersion.is_current)).one()
    diff("d2")                                                     # as `kbsync diff`: loads the current version
    diff("d3", loaded=writer.context().loaded)                    # as the daemon's tick: the writer's live model
    assert answered_by(db, "d2") == answered_by(db, "d3") == {edited}
    rollback(make_writer(settings, db, "rb"), batch.batch_id)
    with db.session() as s:
        after = s.scalars(select(ModelVersion.id).where(ModelVersion.is_current)).one()
    diff("d4")
    assert answered_by(db, "d4") == {after} and after != edited
    db.dispose()
