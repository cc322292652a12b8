"""Entity fetches and RecentChanges against a local API server with recorded entity JSON:
wbgetentities up to 50 ids a call, Special:EntityData one a call, 429 + Retry-After and
maxlag answers waited out, missing entities skipped, RecentChanges paged by rccontinue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kbsync.errors import EndpointError
from kbsync.sources.entities import EntitySource
from kbsync.sources.entity_json import entities_of
from kbsync.sources.reader import ReadOptions
from kbsync.sources.wikidata_api import ApiOptions, WikidataApi

from .replay import fixture

DATA = Path(__file__).resolve().parents[1] / "data" / "wikidata"
UA = "kbsync-tests/0 (https://kb.acme.test; tests@acme.test)"
NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = fixture.ApiServer(entities=dict(entities_of(json.loads((DATA / "entities.json").read_text()))))
    s.start()
    yield s
    s.stop()


def api(server, **kw: object) -> tuple[WikidataApi, list[float]]:  # type: ignore[no-untyped-def]
    waits: list[float] = []
    options = ApiOptions(api_url=server.api_url, entity_url=server.entity_url, user_agent=UA, **kw)  # type: ignore[arg-type]
    return WikidataApi(options, sleep=waits.append), waits


def test_wbgetentities_waits_out_429_and_maxlag(server) -> None:
    server.faults = ["429", "maxlag"]
    server.retry_after = "2"
    client, waits = api(server)
    got = client.fetch(["Q92000001", "Q92000002", "Q1"])   # Q1 is missing: skipped
    assert sorted(got) == ["Q92000001", "Q92000002"] and waits == [2.0, 2.0]
    assert "maxlag=5" in server.requests[-1] and server.user_agents == {UA}


def test_maxlag_without_retry_after_waits_the_lag(server) -> None:
    server.faults = ["maxlag"]
    server.retry_after = ""
    client, waits = api(server)
    client.fetch(["Q92000001"])
    assert waits == [6.2]


def test_gives_up_after_max_attempts(server) -> None:
    server.faults = ["429"] * 3
    client, _ = api(server, max_attempts=3)
    with pytest.raises(EndpointError, match=r"gave up after 3 attempts \(HTTP 429\)"):
        client.fetch(["Q92000001"])


def test_up_to_50_ids_a_call_and_labels_only(server) -> None:
    client, _ = api(server)
    client.fetch([f"Q{i}" for i in range(1, 121)], labels_only=True)
    assert len(server.requests) == 3 and all("props=labels%7Caliases%7Cinfo" in r for r in server.requests)


def test_entitydata_one_a_call_gives_the_same_facts(server) -> None:
    relations = ["P6", "P35", "P36", "P286", "P54"]
    subjects = ["Q92000001", "Q92000002", "Q92000003"]
    by_api = EntitySource(api(server)[0], ReadOptions(as_of=NOW)).read_all(relations, subjects)
    calls = len(server.requests)
    by_page = EntitySource(api(server, fetch="entitydata")[0], ReadOptions(as_of=NOW)).read_all(relations, subjects)
    assert by_api == by_page and len(by_api) == 5
    assert calls == 2 and len(server.requests) - calls == 3 + 9   # each subject, then each value, one a call


def test_recent_changes_pages(server) -> None:
    server.changes = [{"type": "edit", "ns": 0, "title": f"Q{i}", "revid": 100 + i, "old_revid": 99 + i,
                       "rcid": i, "timestamp": f"2025-05-{10 + i // 100:02d}T00:00:{i % 60:02d}Z"} for i in range(1200)]
    client, _ = api(server)
    got = list(client.recent_changes(datetime(2025, 5, 1, tzinfo=UTC), NOW))
    assert [c["revid"] for c in got] == [100 + i for i in range(1200)]
    assert len(server.requests) == 3 and "rccontinue=500" in server.requests[1]
