"""The EventStreams client against a local SSE server replaying recentchange events: resumes
by Last-Event-ID after dropped connections, starts from ?since=, stops when caught up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kbsync.errors import ConfigError, EndpointError
from kbsync.sources.eventstream import EventStream, StreamOptions

from .replay import fixture

T0 = datetime(2025, 6, 1, tzinfo=UTC)
UA = "kbsync-tests/0 (https://kb.acme.test; tests@acme.test)"


def events(n: int) -> list[dict]:
    return [fixture.recentchange(i, f"Q{100 + i}", 5000 + i, T0 + timedelta(seconds=i)) for i in range(n)]


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    replay = events(25)
    s = fixture.StreamServer(count=len(replay), event_at=replay.__getitem__, drop_every=7, idle_s=5.0,
                             start_at_end=False)
    s.start()
    yield s
    s.stop()


def client(url: str, **kw: object) -> EventStream:
    return EventStream(StreamOptions(url=url, user_agent=UA, idle_s=0.3, backoff_s=0.01, **kw))  # type: ignore[arg-type]


def test_reconnects_resume_by_last_event_id_and_idle_means_caught_up(server) -> None:
    got = list(client(server.base + "/v2/stream/recentchange").events())
    assert [e.data["title"] for e in got] == [f"Q{100 + i}" for i in range(25)]
    assert [c["last_event_id"] != "" for c in server.connections] == [False, True, True, True]
    assert '"offset":6' in server.connections[1]["last_event_id"]   # resumed after the 7th event
    assert {c["user_agent"] for c in server.connections} == {UA}


def test_resume_from_a_stored_id_and_from_since(server) -> None:
    stream = client(server.base + "/v2/stream/recentchange")
    first = list(stream.events())
    again = list(stream.events(last_event_id=first[19].id))
    assert [e.data["title"] for e in again] == [f"Q{100 + i}" for i in range(20, 25)]
    since = list(stream.events(since="2025-06-01T00:00:22Z"))
    assert [e.data["title"] for e in since] == ["Q122", "Q123", "Q124"]


def test_stops_at_an_event_from_the_run_start_on(server) -> None:
    got = list(client(server.base + "/x").events(live_from=T0 + timedelta(seconds=3)))
    assert len(got) == 4


def test_refused_connections_give_up_in_one_line() -> None:
    with pytest.raises(EndpointError, match=r"gave up after 3 attempts \(cannot connect"):
        list(client("http://127.0.0.1:9/v2/stream/recentchange", max_attempts=3).events())


def test_wikimedia_stream_needs_a_contact() -> None:
    with pytest.raises(ConfigError, match="stream.wikimedia.org requires"):
        EventStream(StreamOptions(user_agent="kbsync"))
