"""kbsync follow against local servers replaying Wikidata's shapes (benchmarks/wikidata_fixture.py):
the first run reads the configured items whole; the stream's edits of watched items (deduped by
revision, out of order, other wikis and unwatched items dropped) are fetched and diffed as
kbsync diff does, resumed by Last-Event-ID; a gap longer than the stream keeps is read from
RecentChanges; past 30 days the follower asks for a dump reconcile."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sources.replay import fixture  # tests/ is on sys.path
from sqlalchemy import select

from kbsync.errors import SourceError
from kbsync.model.loading import LoadedModel, load_model
from kbsync.sources.entity_json import entities_of
from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow, Event, FollowedEntity, KbFact
from kbsync.sync.from_settings import follow_from_settings

pytestmark = pytest.mark.process   # local EventStreams and API servers, several follower runs each (~40 s)

DATA = Path(__file__).resolve().parents[1] / "data" / "wikidata"
UA = "kbsync-tests/0 (https://kb.acme.test; tests@acme.test)"
RELATIONS = ["P6", "P35", "P36", "P286", "P54"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(tiny_model_dir), state_dir=tmp_path_factory.mktemp("state"), device="cpu")


@pytest.fixture
def servers() -> Iterator[tuple[object, object]]:
    events = [json.loads(line) for line in (DATA / "recentchange.jsonl").read_text().splitlines()]
    stream = fixture.StreamServer(count=len(events), event_at=events.__getitem__, drop_every=4, idle_s=5.0)
    api = fixture.ApiServer(entities=copy.deepcopy(entities_of(json.loads((DATA / "entities.json").read_text()))))
    stream.start()
    api.start()
    yield stream, api
    stream.stop()
    api.stop()


def settings_for(make_settings, tmp_path: Path, stream, api, as_of: str, url: str = ""):  # type: ignore[no-untyped-def]
    url = url or f"sqlite:///{tmp_path / 'follow.db'}"
    store_db.upgrade(url)
    return make_settings(db_url=url, relations={"enabled": RELATIONS}, kb={
        "source": "wikidata", "subjects": ["Q92000001", "Q92000002", "Q92000003"], "as_of": as_of,
        "eventstreams_url": stream.base + "/v2/stream/recentchange", "api_url": api.api_url,
        "entity_url": api.entity_url, "user_agent": UA, "stream_idle_s": 0.5, "max_attempts": 2})


def run(settings, tiny):  # type: ignore[no-untyped-def]
    db = store_db.open_database(settings.database_url)
    try:
        return follow_from_settings(settings, db, settings.state.dir, run_id="r", loaded=tiny)
    finally:
        db.dispose()


def rows(settings, *columns):  # type: ignore[no-untyped-def]
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        out = s.execute(select(*columns)).all()
    db.dispose()
    return sorted(tuple(r) for r in out)


def new_holder(api, eid: str, prop: str, ended: int, value: str, label: str, start: str) -> None:  # type: ignore[no-untyped-def]
    claims = api.entities[eid]["claims"][prop]
    claims[ended].setdefault("qualifiers", {})["P582"] = [fixture.item_claim(eid, prop, value, 0, start=start)
                                                          ["qualifiers"]["P580"][0] | {"property": "P582"}]
    claims.append(fixture.item_claim(eid, prop, value, 99, start=start))
    api.entities[value] = fixture.entity(value, label)


def test_follow_reads_the_stream_fetches_changed_items_and_queues(make_settings, tmp_path, tiny, servers,
                                                                   db_url) -> None:
    stream, api = servers
    settings = settings_for(make_settings, tmp_path, stream, api, "2025-06-01T00:00:00Z", db_url)
    stream.count = 0                      # nothing has happened yet
    first = run(settings, tiny)          # never followed: the configured items are read whole
    assert (first.fetched, first.diff["new"], first.diff["review"]) == (3, 5, 1)
    assert first.diff["queued"] == 4      # the tiny model knows nothing; "no value" is not taught
    assert stream.connections[0]["since"] == "2025-06-01T00:00:00Z"
    # Bob Baker's term ends on 2025-05-31, Fay Fox's begins: the edit the stream announces
    new_holder(api, "Q92000001", "P6", 1, "Q92000016", "Fay Fox", "+2025-05-31T00:00:00Z")
    stream.count = 10                     # the recorded edits come in
    second = run(settings, tiny)
    assert (second.events, second.wikidata, second.watched, second.newer) == (10, 6, 4, 2)
    assert second.fetched == 2 and second.diff["changed"] == 1 and second.diff["probed"] == 1
    assert second.diff["queued"] + second.diff["agree"] == 1 and second.diff["superseded"] == 1
    assert rows(settings, FollowedEntity.entity, FollowedEntity.revision, FollowedEntity.done_revision) == [
        ("Q92000001", 2301000010, 2301000010), ("Q92000003", 2301000013, 2301000013)]
    assert rows(settings, KbFact.objects, KbFact.relation)[-1] == (["Q92000016"], "P6") or \
        (["Q92000016"], "P6") in rows(settings, KbFact.objects, KbFact.relation)
    assert len(stream.connections) >= 4 and all(c["last_event_id"] for c in stream.connections[2:])
    third = run(settings, tiny)           # resumed after the last event: nothing new
    assert (third.events, third.fetched, third.diff["queued"]) == (0, 0, 0)
    targets = rows(settings, EditRequestRow.subject, EditRequestRow.relation, EditRequestRow.target_new,
                   EditRequestRow.state)
    assert ("Q92000001", "P6", "Bob Baker", "superseded") in targets   # the KB moved on: not taught
    assert len(targets) == 4 + second.diff["queued"]                      # nothing queued twice


def test_a_gap_is_read_from_recent_changes_and_past_30_days_is_refused(make_settings, tmp_path, tiny,
                                                                         servers) -> None:
    stream, api = servers
    run(settings_for(make_settings, tmp_path, stream, api, "2025-06-01T00:00:00Z"), tiny)   # reads the 10 edits
    api.changes = [{"type": "edit", "ns": 0, "title": "Q92000002", "revid": 2301000020, "old_revid": 2301000002,
                    "rcid": 1, "timestamp": "2025-06-05T10:00:00Z"},
                   {"type": "edit", "ns": 0, "title": "Q77", "revid": 2301000021, "old_revid": 1, "rcid": 2,
                    "timestamp": "2025-06-05T11:00:00Z"}]
    new_holder(api, "Q92000002", "P286", 2, "Q92000017", "Gil Gray", "+2025-06-04T00:00:00Z")
    later = settings_for(make_settings, tmp_path, stream, api, "2025-06-12T00:00:00Z")
    report = run(later, tiny)
    assert (report.backfilled, report.fetched, report.diff["changed"]) == (1, 1, 1)
    assert stream.connections[-1] == {"last_event_id": "", "since": "2025-06-12T00:00:00Z", "user_agent": UA}
    assert (["Q92000017"], "P286") in rows(later, KbFact.objects, KbFact.relation)
    assert rows(later, Event.kind)[-2:] == [("follow",), ("follow_backfill",)] or \
        ("follow_backfill",) in rows(later, Event.kind)
    too_late = settings_for(make_settings, tmp_path, stream, api, "2025-07-20T00:00:00Z")
    with pytest.raises(SourceError, match=r"38 days ago: past the 30 days RecentChanges keeps.*kbsync bootstrap --dump"):
        run(too_late, tiny)
