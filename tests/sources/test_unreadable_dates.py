"""A time qualifier that cannot be read (issue 25: "2099-02-31", "2024-02-31") is logged, counted
and judged so that it never makes a statement current: an unknown start has not begun, an
unknown end has ended. The same from Wikidata-shaped RDF and from entity JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from kbsync.sources.entities import EntityDict, EntitySource
from kbsync.sources.entity_json import entities_of
from kbsync.sources.fact import Fact
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions

NOW = datetime(2025, 6, 1, tzinfo=UTC)

# Q93000001 P36: Paris (normal, since 1900); Berlin preferred from "2099-02-31" (cannot be read):
#   before the fix the preferred statement lost its start and became current now.
# Q93000002 P36: Rome since 1871; Milan from "2024-02-31": before, Milan (the latest start
#   readable or not) was queued as the new capital.
TTL = """
@prefix wd: <http://www.wikidata.org/entity/> .
@prefix wds: <http://www.wikidata.org/entity/statement/> .
@prefix p: <http://www.wikidata.org/prop/> .
@prefix ps: <http://www.wikidata.org/prop/statement/> .
@prefix pq: <http://www.wikidata.org/prop/qualifier/> .
@prefix wikibase: <http://wikiba.se/ontology#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
wd:Q93000001 rdfs:label "Franceland"@en ; p:P36 wds:a1, wds:a2 .
wds:a1 a wikibase:Statement ; ps:P36 wd:Q93000011 ; wikibase:rank wikibase:NormalRank ;
    pq:P580 "1900-01-01T00:00:00Z"^^xsd:dateTime .
wds:a2 a wikibase:Statement ; ps:P36 wd:Q93000012 ; wikibase:rank wikibase:PreferredRank ;
    pq:P580 "2099-02-31T00:00:00Z"^^xsd:dateTime .
wd:Q93000002 rdfs:label "Italyland"@en ; p:P36 wds:b1, wds:b2 .
wds:b1 a wikibase:Statement ; ps:P36 wd:Q93000021 ; wikibase:rank wikibase:NormalRank ;
    pq:P580 "1871-01-01T00:00:00Z"^^xsd:dateTime .
wds:b2 a wikibase:Statement ; ps:P36 wd:Q93000022 ; wikibase:rank wikibase:NormalRank ;
    pq:P580 "2024-02-31T00:00:00Z"^^xsd:dateTime .
wd:Q93000011 rdfs:label "Paris"@en . wd:Q93000012 rdfs:label "Berlin"@en .
wd:Q93000021 rdfs:label "Rome"@en . wd:Q93000022 rdfs:label "Milan"@en .
"""


def claim(value: str, rank: str, start: str) -> dict:
    return {"mainsnak": {"snaktype": "value", "property": "P36", "datatype": "wikibase-item",
                         "datavalue": {"type": "wikibase-entityid",
                                       "value": {"entity-type": "item", "numeric-id": int(value[1:]), "id": value}}},
            "type": "statement", "rank": rank,
            "qualifiers": {"P580": [{"snaktype": "value", "property": "P580", "datatype": "time",
                                     "datavalue": {"type": "time", "value": {
                                         "time": start, "timezone": 0, "before": 0, "after": 0, "precision": 11,
                                         "calendarmodel": "http://www.wikidata.org/entity/Q1985727"}}}]}}


def entity(qid: str, label: str, claims: list[dict] | None = None) -> dict:
    return {"type": "item", "id": qid, "labels": {"en": {"language": "en", "value": label}},
            "claims": {"P36": claims} if claims else {}}


ENTITIES = {"entities": {e["id"]: e for e in [
    entity("Q93000001", "Franceland", [claim("Q93000011", "normal", "+1900-01-01T00:00:00Z"),
                                       claim("Q93000012", "preferred", "+2099-02-31T00:00:00Z")]),
    entity("Q93000002", "Italyland", [claim("Q93000021", "normal", "+1871-01-01T00:00:00Z"),
                                      claim("Q93000022", "normal", "+2024-02-31T00:00:00Z")]),
    entity("Q93000011", "Paris"), entity("Q93000012", "Berlin"), entity("Q93000021", "Rome"),
    entity("Q93000022", "Milan")]}}


def read(kind: str, tmp_path: Path) -> list[Fact]:
    if kind == "entity-json":
        source = EntitySource(EntityDict(entities_of(ENTITIES)), options=ReadOptions(as_of=NOW))
        return source.read_all(["P36"], subjects=["Q93000001", "Q93000002"])
    path = tmp_path / "kb.ttl"
    path.write_text(TTL, encoding="utf-8")
    return RdfFileSource([path], engine=kind, options=ReadOptions(as_of=NOW)).read_all(["P36"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["oxigraph", "rdflib", "entity-json"])
def test_an_unreadable_start_is_not_begun_logged_and_counted(kind: str, tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        facts = {f.subject: f for f in read(kind, tmp_path)}
    assert facts["Q93000001"].objects == ("Q93000011",) and facts["Q93000001"].target == "Q93000011"   # Paris
    assert facts["Q93000001"].why["Q93000012"]["status"] == "future"                                # not Berlin
    assert facts["Q93000002"].objects == ("Q93000021",) and facts["Q93000002"].stale == ()           # Rome stays
    unreadable = [(e["subject"], e["role"], e["literal"].lstrip("+")) for e in logs if e["event"] == "kb.unreadable_date"]
    assert sorted(unreadable) == [("Q93000001", "start", "2099-02-31T00:00:00Z"),
                                  ("Q93000002", "start", "2024-02-31T00:00:00Z")]
    if kind != "entity-json":   # the RDF and SPARQL readers count them in their read summary
        [summary] = [e for e in logs if e["event"] == "kb.read"]
        assert summary["unreadable_dates"] == 2
