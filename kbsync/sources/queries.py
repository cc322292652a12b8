"""The SPARQL text every reader runs: rdflib and pyoxigraph in process, or an endpoint over HTTP.

Standard SPARQL 1.1 only (no wikibase:label service), so Wikidata, Oxigraph and rdflib
answer the same text the same way. Four queries:

1. ``subjects_query``  the subjects a read covers (ids / selector / all), optionally only
                       those whose schema:dateModified >= a cut-off; paged by LIMIT/OFFSET.
2. ``truthy_query``    ?item ?prop ?value from ``wdt:`` triples for a page of subjects.
3. ``statements_query`` ?item ?prop ?statement ?value ?rank and the time qualifiers
                       ?start (pq:P580), ?end (pq:P582), ?point (pq:P585) from ``p:``/``ps:``
                       statements; ranks and times are resolved in Python (timeline.py),
                       the same for every reader.
4. ``entities_query``  labels, aliases (one language) and dateModified of a page of entities.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from kbsync.errors import ConfigError, SourceError

WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"
P = "http://www.wikidata.org/prop/"
PS = "http://www.wikidata.org/prop/statement/"
PQ = "http://www.wikidata.org/prop/qualifier/"
WDNO = "http://www.wikidata.org/prop/novalue/"  # `?statement a wdno:P36`: a "no value" statement
GENID = "/.well-known/genid/"  # WDQS writes "some value" as such an IRI, not as a blank node
WIKIBASE = "http://wikiba.se/ontology#"
RANKS = {WIKIBASE + "PreferredRank": 2, WIKIBASE + "NormalRank": 1, WIKIBASE + "DeprecatedRank": 0}

PREFIXES = f"""\
PREFIX wd: <{WD}>
PREFIX wdt: <{WDT}>
PREFIX p: <{P}>
PREFIX ps: <{PS}>
PREFIX pq: <{PQ}>
PREFIX wdno: <{WDNO}>
PREFIX wikibase: <{WIKIBASE}>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
PREFIX schema: <http://schema.org/>
PREFIX xsd: <http://www.w3.org/2001/XMLSchema#>
"""

LANGUAGE_TAG = re.compile(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*")
NOT_IN_IRI = re.compile(r"[\s<>\"{}|\\^`]")  # what an IRIREF may not hold (SPARQL 1.1, [139])


def iri_ref(iri: str) -> str:
    """`<iri>` for a query's text. A real check, not an assert (`python -O` drops those): an
    IRI with a space, quote or angle bracket would change the query it is pasted into."""
    if not iri or NOT_IN_IRI.search(iri):
        raise SourceError(f"not an IRI: {iri!r}; a subject or value the knowledge source returned (or "
                          "[kb] subjects / [relations] named) holds a space, quote or bracket: fix it there")
    return f"<{iri}>"


def datetime_literal(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f'"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"^^xsd:dateTime'


def check_language(language: str) -> str:
    if not LANGUAGE_TAG.fullmatch(language):
        raise ConfigError(
            f"language {language!r} is not a language tag like en or pt-br; fix [kb] language"
        )
    return language.lower()


def subjects_query(where: str, cutoff: datetime | None, limit: int | None, offset: int) -> str:
    """`limit` None: the whole listing in one query, unordered (a streamed in-process read)."""
    since = ""
    if (
        cutoff is not None
    ):  # subjects without a dateModified are kept: nothing says they are unchanged
        since = (
            "\n  OPTIONAL { ?item schema:dateModified ?modified }"
            f"\n  FILTER(!BOUND(?modified) || ?modified >= {datetime_literal(cutoff)})"
        )
    page = "" if limit is None else f"ORDER BY ?item\nLIMIT {limit}\nOFFSET {offset}\n"
    return f"{PREFIXES}SELECT DISTINCT ?item WHERE {{\n  {{ {where} }}{since}\n  FILTER(isIRI(?item))\n}}\n{page}"


def truthy_query(items: Sequence[str], relations: Sequence[str]) -> str:
    # One VALUES block, then the triple, then FILTERs: rdflib and Oxigraph both look the
    # triples up per bound ?item; a second VALUES block makes both scan every triple.
    return f"""{PREFIXES}SELECT ?item ?prop ?value WHERE {{
  VALUES ?item {{ {_iris(items)} }}
  ?item ?prop ?value .
  FILTER(?prop IN ({_iris((WDT + r for r in relations), ", ")}))
}}
"""


def statements_query(items: Sequence[str], relations: Sequence[str]) -> str:
    # ?statementProp is ps:P of the same P as ?prop in Wikidata's data; reader.py checks it.
    # A "no value" statement has no ps: triple but the class wdno:P (?noValue) instead.
    # A statement with two values of one qualifier comes back as several rows.
    return f"""{PREFIXES}SELECT ?item ?prop ?statement ?statementProp ?value ?noValue ?rank ?start ?end ?point WHERE {{
  VALUES ?item {{ {_iris(items)} }}
  ?item ?prop ?statement .
  FILTER(?prop IN ({_iris((P + r for r in relations), ", ")}))
  {{ ?statement ?statementProp ?value .
    FILTER(?statementProp IN ({_iris((PS + r for r in relations), ", ")})) }}
  UNION
  {{ ?statement a ?noValue .
    FILTER(?noValue IN ({_iris((WDNO + r for r in relations), ", ")})) }}
  OPTIONAL {{ ?statement wikibase:rank ?rank }}
  OPTIONAL {{ ?statement pq:P580 ?start }}
  OPTIONAL {{ ?statement pq:P582 ?end }}
  OPTIONAL {{ ?statement pq:P585 ?point }}
}}
"""


def entities_query(entities: Sequence[str], language: str) -> str:
    return f"""{PREFIXES}SELECT ?entity ?pred ?value WHERE {{
  VALUES ?entity {{ {_iris(entities)} }}
  ?entity ?pred ?value .
  FILTER(?pred IN (rdfs:label, skos:altLabel, schema:dateModified))
  FILTER(?pred = schema:dateModified || LANG(?value) = "{check_language(language)}")
}}
"""


def _iris(iris: Iterable[str], sep: str = " ") -> str:
    return sep.join(iri_ref(i) for i in iris)
