"""A KB read of 0 facts, or of far fewer than the snapshot holds, is an outage or a wrong file
more likely than a KB that lost them (issue 25): refused before the model is loaded, nothing
written, unless `--accept-shrink`; a read with nothing to probe loads no model at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from kbsync.errors import SourceError
from kbsync.store import db as store_db
from kbsync.store.models import Event, KbFact
from kbsync.sync.from_settings import diff_from_settings

HEAD = """@prefix wd: <http://www.wikidata.org/entity/> .
@prefix wdt: <http://www.wikidata.org/prop/direct/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
"""
FACTS = [("Q1001", "Atlantis", "Q5001", "Poseidonia"), ("Q1002", "Lemuria", "Q5002", "Mu"),
         ("Q1003", "Hyperborea", "Q5003", "Thule"), ("Q1004", "Avalon", "Q5004", "Glastonbury")]


def ttl(facts) -> str:  # type: ignore[no-untyped-def]
    return HEAD + "".join(f'wd:{q} rdfs:label "{s}"@en ; wdt:P36 wd:{o} .\nwd:{o} rdfs:label "{c}"@en .\n'
                          for q, s, o, c in facts)


def never_load():  # type: ignore[no-untyped-def]
    raise AssertionError("the model was loaded")


@pytest.fixture
def kb(make_settings, tmp_path: Path, sqlite_url: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "kb.ttl"
    path.write_text(ttl(FACTS), encoding="utf-8")
    settings = make_settings(kb={"source": "rdf", "mode": "truthy", "files": [str(path)]},
                             relations={"enabled": ["P36"]}, probe={"max_new_tokens": 3, "sample_unchanged": 0})
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)
    diff_from_settings(settings, db, settings.state.dir, run_id="first", snapshot_only=True)
    yield settings, db, path
    db.dispose()


def facts_stored(db) -> int:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(KbFact)) or 0


def test_a_read_of_nothing_is_refused_before_the_model_loads(kb) -> None:  # type: ignore[no-untyped-def]
    settings, db, path = kb
    path.write_text(HEAD, encoding="utf-8")             # an empty export: 0 facts where 4 were
    with pytest.raises(SourceError, match="returned 0 facts where the snapshot holds 4.*--accept-shrink"):
        diff_from_settings(settings, db, settings.state.dir, run_id="empty", loaded=never_load)
    assert facts_stored(db) == 4
    with db.session() as s:
        assert s.scalars(select(Event).where(Event.run_id == "empty")).first() is None   # nothing written


def test_a_small_read_is_refused_too_and_accepted_on_request(kb) -> None:  # type: ignore[no-untyped-def]
    settings, db, path = kb
    path.write_text(ttl(FACTS[:1]), encoding="utf-8")  # 1 of 4
    with pytest.raises(SourceError, match="returned 1 facts where the snapshot holds 4"):
        diff_from_settings(settings, db, settings.state.dir, run_id="small", loaded=never_load)
    report = diff_from_settings(settings, db, settings.state.dir, run_id="accept", loaded=never_load,
                                accept_shrink=True)
    assert (report.read, report.shrink, report.forgotten) == (1, 4, 3) and facts_stored(db) == 1
    again = diff_from_settings(settings, db, settings.state.dir, run_id="again", loaded=never_load)
    assert again.read == 1 and again.shrink == 0       # the snapshot is the KB now: nothing suspect


def test_a_read_with_nothing_to_probe_loads_no_model(kb) -> None:  # type: ignore[no-untyped-def]
    settings, db, _ = kb
    report = diff_from_settings(settings, db, settings.state.dir, run_id="same", loaded=never_load)
    assert (report.read, report.unchanged, report.probed) == (4, 4, 0)


def test_the_cli_refuses_with_the_source_exit_code(kb, run_cli) -> None:  # type: ignore[no-untyped-def]
    settings, db, path = kb
    path.write_text(HEAD, encoding="utf-8")
    env = {"KBSYNC_DATABASE__URL": settings.database_url, "KBSYNC_STATE__DIR": str(settings.state.dir),
           "KBSYNC_MODEL__PATH": "/nowhere/no-model", "KBSYNC_KB__SOURCE": "rdf", "KBSYNC_KB__MODE": "truthy",
           "KBSYNC_KB__FILES": f'["{path}"]', "KBSYNC_RELATIONS__ENABLED": '["P36"]'}
    r = run_cli("diff", env=env)
    assert r.exit_code == 5 and "SourceError: the KB read returned 0 facts" in r.err, r.err
