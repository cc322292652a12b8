"""The KB's edge cases (issue 28), read from Wikidata-shaped RDF (tests/data/wikidata/edges.ttl)
by both in-process engines: an unreadable end time, "some value" as a genid IRI, a preferred
"no value", a stale value with a future second term, and the User-Agent Wikimedia asks for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from kbsync.errors import ConfigError
from kbsync.sources.fact import Fact
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource
from kbsync.sources.timeline import NO_VALUE, NORMAL, PREFERRED, Statement, due, resolve
from kbsync.sources.useragent import DEFAULT_USER_AGENT, check_user_agent

EDGES = Path(__file__).resolve().parents[1] / "data" / "wikidata" / "edges.ttl"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
RELATIONS = ["P6", "P35", "P36", "P286", "P54"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def read(engine: str) -> dict[tuple[str, str], Fact]:
    source = RdfFileSource([EDGES], engine=engine, options=ReadOptions(as_of=NOW))  # type: ignore[arg-type]
    return {(f.subject, f.relation): f for f in source.read_all(RELATIONS)}


@pytest.fixture(params=["oxigraph", "rdflib"])
def facts(request: pytest.FixtureRequest) -> dict[tuple[str, str], Fact]:
    return read(request.param)


def test_unreadable_end_time_is_an_unknown_end_never_current(facts) -> None:
    with structlog.testing.capture_logs() as logs:
        read("oxigraph")
    p6 = facts["Q92000001", "P6"]
    assert p6.objects == ("Q92000012",) and p6.stale == ("Q92000011",)
    assert p6.why["Q92000011"]["status"] == "ended" and p6.why["Q92000011"]["end"] == "unknown"
    assert [(e["role"], e["literal"]) for e in logs if e["event"] == "kb.unreadable_date"] == [("end", "2020-02-30T00:00:00Z")]


def test_unknown_end_alone_is_not_current() -> None:
    alice = Statement("Q1", NORMAL, starts=[at("2015-01-01")])
    from kbsync.sources.timeline import LONG_AGO
    alice.ends.append(LONG_AGO)  # what the readers make of an end they cannot read
    r = resolve([alice], NOW, single_valued=True)
    assert r.current == () and r.stale == ("Q1",)


def test_genid_iri_is_some_value_and_supersedes_nothing(facts) -> None:
    p36 = facts["Q92000001", "P36"]
    assert p36.objects == ("Q92000021",) and p36.target == "Q92000021" and p36.stale == ()
    assert not any("genid" in o for o in (*p36.objects, *p36.why))


def test_preferred_no_value_is_a_current_none_with_the_old_holder_stale(facts) -> None:
    p35 = facts["Q92000001", "P35"]
    assert p35.objects == () and p35.target is None
    assert p35.stale == ("Q92000013",) and p35.object_labels == {"Q92000013": "Carol Chen"}
    assert p35.why[NO_VALUE]["status"] == "current" and p35.why["Q92000013"]["status"] == "superseded"


def test_no_value_of_normal_rank_loses_to_a_later_holder() -> None:
    vacant = Statement(NO_VALUE, NORMAL, starts=[at("2019-01-01")])
    holder = Statement("Q5", NORMAL, starts=[at("2021-01-01")])
    r = resolve([vacant, holder], NOW, single_valued=True)
    assert (r.current, r.none, r.stale) == (("Q5",), False, ())
    r = resolve([Statement(NO_VALUE, PREFERRED), holder], NOW, single_valued=True)
    assert (r.current, r.none, r.stale) == ((), True, ("Q5",))


def test_future_marker_survives_for_a_stale_value_with_a_second_term(facts) -> None:
    p286 = facts["Q92000002", "P286"]
    assert p286.objects == ("Q92000015",) and p286.stale == ("Q92000014",)
    assert p286.why["Q92000014"]["status"] == "ended"
    assert p286.why["Q92000014"]["next_start"] == "2026-01-01T00:00:00Z"
    assert due(p286.why, NOW, at("2026-01-02")) and not due(p286.why, NOW, at("2025-12-31"))


def test_multi_valued_keeps_both_current_teams(facts) -> None:
    p54 = facts["Q92000003", "P54"]
    assert p54.objects == ("Q92000031", "Q92000032") and p54.target == "Q92000032"


def test_wikimedia_hosts_refuse_a_user_agent_without_a_real_contact() -> None:
    wdqs = "https://query.wikidata.org/sparql"
    for ua in (DEFAULT_USER_AGENT, "kbsync/0.1 (https://example.org/kbsync; ops@example.org)", "kbsync"):
        with pytest.raises(ConfigError, match=r"no contact .* query.wikidata.org requires; set \[kb\] user_agent"):
            SparqlEndpointSource(EndpointOptions(url=wdqs, user_agent=ua))
        with pytest.raises(ConfigError, match="no contact"):
            check_user_agent("https://stream.wikimedia.org/v2/stream/recentchange", ua)
    good = "kbsync/0.1 (https://kb.acme.test/kbsync; ops@acme.test)"
    assert check_user_agent(wdqs, good) == good
    assert check_user_agent(wdqs, "kbsync/0.1 (ops@acme.test)")
    assert check_user_agent("http://127.0.0.1:7878/query", "kbsync") == "kbsync"  # not Wikimedia's: any


def test_default_user_agent_is_not_a_placeholder_contact() -> None:
    from kbsync.config import KbSettings
    assert "example.org" not in KbSettings().user_agent
