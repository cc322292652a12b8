"""One statement model, one timeline: the same facts as entity JSON (wbgetentities' shape,
tests/data/wikidata/entities.json), as RDF statements (edges.ttl, both engines) and through
SPARQL (an Oxigraph server loaded with edges.ttl) give the same facts, edge cases included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kbsync.errors import SourceError
from kbsync.sources.entities import EntityDict, EntitySource
from kbsync.sources.entity_json import entities_of
from kbsync.sources.fact import Fact
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource

from .conftest import UA, OxigraphServer, start_oxigraph, stop_oxigraph

DATA = Path(__file__).resolve().parents[1] / "data" / "wikidata"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
RELATIONS = ["P6", "P35", "P36", "P286", "P54"]
SUBJECTS = ["Q92000001", "Q92000002", "Q92000003"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OxigraphServer]:
    s = start_oxigraph(tmp_path_factory.mktemp("oxigraph"), [DATA / "edges.ttl"])
    yield s
    stop_oxigraph(s)


def entity_source(**options: object) -> EntitySource:
    answer = json.loads((DATA / "entities.json").read_text())
    return EntitySource(EntityDict(entities_of(answer)), options=ReadOptions(as_of=NOW, **options))  # type: ignore[arg-type]


def by_key(facts: list[Fact]) -> dict[tuple[str, str], Fact]:
    return {(f.subject, f.relation): f for f in facts}


@pytest.mark.process   # an Oxigraph server
def test_entity_json_rdf_and_sparql_give_the_same_facts(server: OxigraphServer) -> None:
    from_json = by_key(entity_source().read_all(RELATIONS, subjects=SUBJECTS))
    from_rdf = by_key(RdfFileSource([DATA / "edges.ttl"], options=ReadOptions(as_of=NOW)).read_all(RELATIONS))
    from_rdflib = by_key(RdfFileSource([DATA / "edges.ttl"], engine="rdflib",
                                       options=ReadOptions(as_of=NOW)).read_all(RELATIONS))
    sparql = SparqlEndpointSource(EndpointOptions(server.query_url, user_agent=UA), options=ReadOptions(as_of=NOW))
    from_sparql = by_key(sparql.read_all(RELATIONS, subjects=SUBJECTS))
    assert len(from_json) == 5
    assert from_json == from_rdf == from_rdflib == from_sparql
    current = {k: (f.objects, f.target, f.stale) for k, f in from_json.items()}
    assert current == {
        ("Q92000001", "P6"): (("Q92000012",), "Q92000012", ("Q92000011",)),  # Alice's end unreadable: ended
        ("Q92000001", "P35"): ((), None, ("Q92000013",)),                      # preferred "no value"
        ("Q92000001", "P36"): (("Q92000021",), "Q92000021", ()),               # "some value" ignored
        ("Q92000002", "P286"): (("Q92000015",), "Q92000015", ("Q92000014",)),  # Dan's second term ahead
        ("Q92000003", "P54"): (("Q92000031", "Q92000032"), "Q92000032", ()),
    }
    assert from_json["Q92000002", "P286"].why["Q92000014"]["next_start"] == "2026-01-01T00:00:00Z"
    assert from_json["Q92000001", "P6"].revision == "2025-05-20T08:00:00Z"
    assert from_json["Q92000001", "P6"].object_aliases == {"Q92000012": ("Robert Baker",)}


def test_entity_json_precision_and_ranks_as_rdf_reads_them() -> None:
    facts = by_key(entity_source(page_size=1).read_all(["P54"], subjects=["Q92000003"]))
    fact = facts["Q92000003", "P54"]
    assert fact.why["Q92000031"]["start"] == "2018-01-01T00:00:00Z"  # +2018-00-00, year precision
    assert "Q92000033" not in fact.why  # deprecated: neither a target nor stale


def test_labels_are_fetched_once_across_pages() -> None:
    calls: list[tuple[tuple[str, ...], bool]] = []
    inner = entity_source().fetcher

    class Counting:
        def fetch(self, ids, labels_only=False):  # type: ignore[no-untyped-def]
            calls.append((tuple(ids), labels_only))
            return inner.fetch(ids, labels_only)

    source = entity_source(page_size=1)
    source.fetcher = Counting()
    source.read_all(["P286"], subjects=["Q92000002", "Q92000002"])
    assert calls == [(("Q92000002",), False), (("Q92000014", "Q92000015"), True)]


def test_an_entity_source_needs_subjects() -> None:
    with pytest.raises(SourceError, match="reads given subjects only"):
        entity_source().read_all(["P6"])


def test_missing_and_redirected_entities() -> None:
    answer = {"entities": {"Q1": {"id": "Q1", "missing": ""}, "Q2": {"id": "Q3", "claims": {}}}}
    assert list(entities_of(answer)) == ["Q2"]
