"""Wikidata's entity JSON as the statements and labels the RDF readers produce.

One shape for the three ways Wikidata hands out entities: ``Special:EntityData/Q42.json``
and ``wbgetentities`` (``{"entities": {"Q42": entity}}``), and the JSON dump (an entity a
line). An entity::

    {"id": "Q42", "modified": "2025-05-20T08:00:00Z", "lastrevid": 2301000001,
     "labels": {"en": {"language": "en", "value": "Douglas Adams"}},
     "aliases": {"en": [{"language": "en", "value": "Douglas Noël Adams"}]},
     "claims": {"P26": [statement, ...]}}
    statement = {"rank": "preferred" | "normal" | "deprecated",
                 "mainsnak": {"snaktype": "value" | "somevalue" | "novalue", "property": "P26",
                              "datavalue": {"type": "wikibase-entityid", "value": {"id": "Q14623681"}}},
                 "qualifiers": {"P580": [{"snaktype": "value", "datavalue": {"type": "time",
                                "value": {"time": "+1991-11-25T00:00:00Z", "precision": 11}}}]}}

maps to ``timeline.Statement`` exactly as ``reader.py`` maps the RDF of the same entity:
entity values are IRIs (``wd:`` + id), strings and text in the configured language are
literals, "no value" is ``NO_VALUE``, "some value" is skipped; qualifiers P580/P582/P585
give start, end, point in time (a "some value" end, or one that cannot be read: ended long
ago; year/month precision: the first moment of the period). Other value types (quantities,
times, coordinates as main values) are not read, as in the statements mode of the RDF readers
only entity and text values name something a model can be taught.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from kbsync.sources import queries as q
from kbsync.sources.reader import UNREADABLE_JUDGED, Labels, Statements
from kbsync.sources.timeline import (
    LONG_AGO,
    NO_VALUE,
    NORMAL,
    QUALIFIER_ROLES,
    Statement,
    qualifier_moment,
)

log = structlog.get_logger(__name__)

RANKS = {"preferred": 2, "normal": 1, "deprecated": 0}
TIME_QUALIFIERS = ("P580", "P582", "P585")  # start time, end time, point in time
Entity = Mapping[str, Any]


def add_statements(out: Statements, entity: Entity, relations: Iterable[str], language: str) -> set[str]:
    """Add the statements of `relations` of one entity to `out`; returns the literal values seen."""
    item = q.WD + entity["id"]
    claims = entity.get("claims") or {}
    literals: set[str] = set()
    for relation in relations:
        for n, claim in enumerate(claims.get(relation, ())):
            st = _statement(claim, language)
            if st is None:
                continue
            if st.literal:
                literals.add(st.value)
            _times(st, claim.get("qualifiers") or {}, entity["id"], relation)
            out.setdefault((item, relation), {})[claim.get("id") or f"{item}#{relation}-{n}"] = st
    return literals


def add_labels(labels: Labels, entity: Entity, language: str) -> None:
    """The entity's label and aliases in `language` and its modified time, keyed by its IRI."""
    iri = q.WD + entity["id"]
    label = (entity.get("labels") or {}).get(language)
    if label and label.get("value"):
        labels.label[iri] = label["value"]
    for alias in (entity.get("aliases") or {}).get(language, ()):
        if alias.get("value"):
            labels.aliases[iri].add(alias["value"])
    modified = _iso(entity.get("modified"))
    if modified is not None:
        labels.modified[iri] = modified


def slim_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a statement `add_statements` reads (value, rank, id, time qualifiers): what a
    dump's scratch copy keeps of it, a fraction of the statement with its references."""
    snak = claim.get("mainsnak") or {}
    out: dict[str, Any] = {"rank": claim.get("rank", "normal"),
                           "mainsnak": {"snaktype": snak.get("snaktype"), "datavalue": snak.get("datavalue")}}
    if claim.get("id"):
        out["id"] = claim["id"]
    qualifiers = claim.get("qualifiers") or {}
    times = {p: [{"snaktype": q.get("snaktype"),
                  "datavalue": {"value": {"time": ((q.get("datavalue") or {}).get("value") or {}).get("time")}}}
                 for q in qualifiers[p]] for p in TIME_QUALIFIERS if p in qualifiers}
    if times:
        out["qualifiers"] = times
    return out


def entities_of(answer: Mapping[str, Any]) -> dict[str, Entity]:
    """wbgetentities / Special:EntityData's ``{"entities": {...}}`` -> id -> entity, without the
    ids it reports ``missing`` (deleted or never created). A redirect answers under the new id."""
    out: dict[str, Entity] = {}
    for key, entity in (answer.get("entities") or {}).items():
        if not isinstance(entity, Mapping) or "missing" in entity or "id" not in entity:
            continue
        out[key] = entity
    return out


def referenced_ids(statements: Statements, literals: set[str]) -> list[str]:
    """Entity ids of every entity value of `statements` (whose labels the facts need)."""
    return list(dict.fromkeys(st.value.removeprefix(q.WD) for by_key in statements.values()
                              for st in by_key.values() if st.value.startswith(q.WD) and st.value not in literals))


def _statement(claim: Mapping[str, Any], language: str) -> Statement | None:
    snak = claim.get("mainsnak") or {}
    rank = RANKS.get(claim.get("rank", "normal"), NORMAL)
    kind = snak.get("snaktype")
    if kind == "novalue":
        return Statement(NO_VALUE, rank)
    if kind != "value":  # "somevalue": Wikidata's unknown value, nothing to ask or teach
        return None
    datavalue = snak.get("datavalue") or {}
    value, vtype = datavalue.get("value"), datavalue.get("type")
    if vtype == "wikibase-entityid" and isinstance(value, Mapping):
        eid = value.get("id") or _numeric_id(value)
        return Statement(q.WD + eid, rank) if eid else None
    if vtype == "string" and isinstance(value, str):
        return Statement(value, rank, literal=True)
    if vtype == "monolingualtext" and isinstance(value, Mapping) and value.get("language", "").lower() == language:
        return Statement(value["text"], rank, literal=True)
    return None


def _numeric_id(value: Mapping[str, Any]) -> str | None:
    prefix = {"item": "Q", "property": "P", "lexeme": "L"}.get(value.get("entity-type", ""))
    return f"{prefix}{value['numeric-id']}" if prefix and "numeric-id" in value else None


def _times(st: Statement, qualifiers: Mapping[str, Sequence[Mapping[str, Any]]], entity: str, relation: str) -> None:
    for prop, role in QUALIFIER_ROLES.items():
        moments = {"start": st.starts, "end": st.ends, "point": st.points}[role]
        for snak in qualifiers.get(prop, ()):
            kind = snak.get("snaktype")
            if kind == "novalue":
                continue
            text = ((snak.get("datavalue") or {}).get("value") or {}).get("time") if kind == "value" else None
            if isinstance(text, str):
                moment, unreadable = qualifier_moment(text, role)
                if unreadable:
                    log.warning("kb.unreadable_date", subject=entity, relation=relation, value=_short(st.value),
                                role=role, literal=text, judged=UNREADABLE_JUDGED[role])
            else:   # "some value": an unknown end has ended; an unknown start is no start
                moment = LONG_AGO if role == "end" else None
            if moment is not None and moment not in moments:
                moments.append(moment)


def _short(value: str) -> str:
    return value.removeprefix(q.WD)


def _iso(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
