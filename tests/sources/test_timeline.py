"""What is current as of a moment: ranks and start/end/point-in-time qualifiers, on RDF files
(rdflib, pyoxigraph) and on an Oxigraph server, from Wikidata-shaped public facts (leaders.ttl)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource
from kbsync.sources.timeline import LONG_AGO, NORMAL, PREFERRED, Statement, due, parse_time, resolve

from .conftest import LEADERS, UA

RELATIONS = ["P6", "P35", "P54", "P169", "P286", "P488", "P1037", "P1308"]
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_parse_time_reads_wikidata_and_xsd_forms():
    assert parse_time("2014-01-01T00:00:00Z") == at("2014-01-01")
    assert parse_time("+2014-00-00T00:00:00Z") == at("2014-01-01")  # year precision, JSON form
    assert parse_time("2014-00-00T00:00:00Z") == at("2014-01-01")  # the same, in a literal
    assert parse_time("2014-07-00") == at("2014-07-01")  # month precision
    assert parse_time("2014-07-05T12:00:00+02:00") == at("2014-07-05T10:00:00")
    assert parse_time("-0044-03-15T00:00:00Z") == LONG_AGO  # before year 1: long ago
    assert parse_time("soon") is None


def test_resolve_single_valued_latest_start_wins_ties_by_id():
    a = Statement("Q2", NORMAL, starts=[at("2020-01-01")])
    b = Statement("Q1", NORMAL, starts=[at("2020-01-01")])
    c = Statement("Q3", NORMAL, starts=[at("2010-01-01")])
    r = resolve([a, b, c], NOW, single_valued=True)
    assert r.current == ("Q1",) and r.target == "Q1"  # equal starts: the smallest id
    assert r.stale == ("Q2", "Q3") and r.why["Q3"]["status"] == "superseded"
    assert resolve([c, b, a], NOW, single_valued=True) == r  # order of the rows does not matter


def test_resolve_preferred_beats_normal_and_future_is_neither():
    old = Statement("Q1", NORMAL, starts=[at("2000-01-01")])
    best = Statement("Q2", PREFERRED)
    future = Statement("Q3", PREFERRED, starts=[at("2030-01-01")])
    r = resolve([old, best, future], NOW, single_valued=False)
    assert r.current == ("Q2",) and r.stale == () and r.why["Q3"]["status"] == "future"


def test_due_when_an_end_or_a_start_passes():
    why = {"Q1": {"status": "current", "rank": "normal", "start": None, "end": "2025-05-06T00:00:00Z"},
           "Q2": {"status": "future", "rank": "normal", "start": "2025-07-01T00:00:00Z", "end": None},
           "Q3": {"status": "ended", "rank": "normal", "start": None, "end": "2020-01-01T00:00:00Z"}}
    assert due(why, at("2025-05-01"), at("2025-05-07"))  # Q1 ended in between
    assert due(why, at("2025-06-01"), at("2025-07-02"))  # Q2 started in between
    assert not due(why, at("2025-05-07"), at("2025-06-30"))


def test_resolve_unknown_end_is_ended():
    r = resolve([Statement("Q1", NORMAL, ends=[LONG_AGO])], NOW, single_valued=True)
    assert r.current == () and r.stale == ("Q1",)


def file_source(engine: str, as_of: datetime = NOW) -> RdfFileSource:
    return RdfFileSource([LEADERS], engine=engine, options=ReadOptions(as_of=as_of))  # type: ignore[arg-type]


def summary(facts) -> dict:
    return {
        (f.subject, f.relation): (
            [f.object_labels[o] for o in f.objects],
            f.object_labels.get(f.target or ""),
            [f.object_labels[o] for o in f.stale],
        )
        for f in facts
    }


EXPECTED_NOW = {
    # all normal rank, end times only: Starmer, and the most recently ended first
    ("Q91000001", "P6"): (["Keir Starmer"], "Keir Starmer", ["Rishi Sunak", "Liz Truss", "Boris Johnson"]),
    # preferred current
    ("Q91000001", "P35"): (["Charles III"], "Charles III", ["Elizabeth II"]),
    # year-precision start (+1993-00-00) and end (1996-01-01)
    ("Q91000002", "P169"): (["Tim Cook"], "Tim Cook", ["Steve Jobs", "Michael Spindler", "John Sculley"]),
    # a deprecated value (Bill Gates) is neither current nor stale
    ("Q91000003", "P169"): (["Satya Nadella"], "Satya Nadella", ["Steve Ballmer"]),
    # two current values of a multi-valued relation; the target started most recently
    ("Q91000004", "P54"): (
        ["Al Nassr", "Portugal national football team"],
        "Al Nassr",
        ["Manchester United", "Juventus", "Real Madrid"],
    ),
    ("Q91000041", "P286"): (["Ruben Amorim"], "Ruben Amorim", ["Erik ten Hag"]),
    ("Q91000006", "P6"): (["Friedrich Merz"], "Friedrich Merz", ["Olaf Scholz", "Angela Merkel"]),
    # a holder who ended once and holds the office again is not stale
    ("Q91000007", "P1308"): (["Donald Trump"], "Donald Trump", ["Joe Biden", "Barack Obama"]),
    # an end typed xsd:dateTime with month and day 00
    ("Q91000008", "P488"): (["Jerome Powell"], "Jerome Powell", ["Janet Yellen"]),
    ("Q91000009", "P1037"): (["Kristalina Georgieva"], "Kristalina Georgieva", ["Christine Lagarde"]),
}


@pytest.mark.parametrize("engine", ["rdflib", "oxigraph"])
def test_current_values_from_files(engine):
    facts = file_source(engine).read_all(RELATIONS)
    assert summary(facts) == EXPECTED_NOW
    apple = next(f for f in facts if f.subject == "Q91000002")
    assert apple.why["Q91000022"] == {  # Spindler: why he is stale, year precision read as Jan 1
        "status": "ended", "rank": "normal", "start": "1993-01-01T00:00:00Z", "end": "1996-01-01T00:00:00Z",
    }
    assert apple.why["Q91000024"]["status"] == "current"


def test_oxigraph_server_reads_the_same(leaders_server):
    options = ReadOptions(as_of=NOW, page_size=3)
    remote = SparqlEndpointSource(EndpointOptions(leaders_server.query_url, UA), options=options)
    def read(source):  # a read comes in no particular order
        return sorted(source.read_all(RELATIONS), key=lambda f: (f.subject, f.relation))

    assert read(remote) == read(file_source("oxigraph"))
    assert read(file_source("rdflib")) == read(file_source("oxigraph"))


@pytest.mark.parametrize("engine", ["rdflib", "oxigraph"])
def test_future_start_and_year_precision_as_of_earlier_moments(engine):
    before_merz = summary(file_source(engine, at("2025-05-01")).read_all(["P6"]))
    assert before_merz["Q91000006", "P6"] == (["Olaf Scholz"], "Olaf Scholz", ["Angela Merkel"])  # Merz: future
    germany = next(f for f in file_source(engine, at("2025-05-01")).read_all(["P6"]) if f.subject == "Q91000006")
    assert germany.why["Q91000063"] == {"status": "future", "rank": "normal", "start": "2025-05-06T00:00:00Z",
                                        "end": None}
    assert before_merz["Q91000001", "P6"] == (["Keir Starmer"], "Keir Starmer", ["Rishi Sunak", "Liz Truss",
                                                                                  "Boris Johnson"])
    during_spindler = summary(file_source(engine, at("1995-06-01")).read_all(["P169"]))
    assert during_spindler["Q91000002", "P169"] == (["Michael Spindler"], "Michael Spindler", ["John Sculley"])
    between = summary(file_source(engine, at("1996-06-01")).read_all(["P169"]))
    assert ("Q91000002", "P169") not in between  # Spindler ended 1996, Jobs from 1997: nobody


def test_truthy_mode_cannot_tell_ended_values():
    truthy = RdfFileSource([LEADERS], options=ReadOptions(mode="truthy", as_of=NOW)).read_all(["P6"])
    uk = next(f for f in truthy if f.subject == "Q91000001")
    assert len(uk.objects) == 4  # every wdt: value, Johnson, Truss and Sunak included
