"""Turning query results into Facts, the same way for every backend (rdflib, Oxigraph, HTTP).

A backend answers SELECT text with rows of ``Term``s; ``QueryReader`` pages through the
subjects, runs the queries of ``queries.py`` and builds the facts:

1. list the subjects (ids as given; or a subjects query, filtered by dateModified for ``since``)
2. per page of ``page_size`` subjects: the values of each requested relation
   (truthy: every ``wdt:`` value; statements: best rank, deprecated dropped)
3. labels, aliases and dateModified of the page's subjects and objects
4. one Fact per (subject, relation) that has a subject label and a labelled object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import structlog

from kbsync.errors import CatalogueError, ConfigError
from kbsync.sources import queries as q
from kbsync.sources.catalogue import PROPERTY_ID, Catalogue, load_catalogue
from kbsync.sources.fact import Fact
from kbsync.sources.subjects import SubjectSelection

log = structlog.get_logger(__name__)

LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
ALT_LABEL = "http://www.w3.org/2004/02/skos/core#altLabel"
DATE_MODIFIED = "http://schema.org/dateModified"


@dataclass(frozen=True)
class Term:
    kind: Literal["iri", "literal", "bnode"]
    value: str
    lang: str | None = None
    datatype: str | None = None


Row = dict[str, Term]  # variable name -> bound term (unbound variables are absent)


class Backend(Protocol):
    def select(self, query: str) -> list[Row]: ...


@dataclass(frozen=True)
class ReadOptions:
    mode: Literal["truthy", "statements"] = "truthy"
    language: str = "en"
    page_size: int = 200  # subjects (and entities) per query, bound with VALUES
    list_page_size: int = 10_000  # subjects per page of the subjects query (LIMIT/OFFSET)
    overlap: timedelta = timedelta(minutes=10)  # since - overlap: edits racing the last read
    selection: SubjectSelection = field(default_factory=SubjectSelection)


@dataclass
class _Labels:
    label: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    modified: dict[str, str] = field(default_factory=dict)


class QueryReader(ABC):
    """A KnowledgeSource over any backend that answers SPARQL SELECT."""

    def __init__(self, options: ReadOptions, catalogue: Catalogue | None = None):
        if options.mode not in ("truthy", "statements"):
            raise ConfigError(f"mode {options.mode!r} is not truthy or statements; fix [kb] mode")
        if options.page_size < 1 or options.list_page_size < 1:
            raise ConfigError("page sizes must be >= 1; fix [kb] page_size")
        self.options = options
        self.language = q.check_language(options.language)
        self.catalogue = catalogue if catalogue is not None else load_catalogue()

    @abstractmethod
    def backend(self) -> Backend:
        """The backend to query, opened (files parsed) if it is not yet."""

    def read(
        self,
        relations: Sequence[str],
        subjects: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> Iterator[Fact]:
        relations = self._check_relations(relations)
        selection = (
            SubjectSelection.of_ids(subjects) if subjects is not None else self.options.selection
        )
        cutoff = None if since is None else _utc(since) - self.options.overlap
        backend = self.backend()  # opening it (parsing files) fails before anything is yielded
        if not relations:
            return
        items = self._subjects(backend, selection, relations, cutoff)
        log.info(
            "kb.read",
            subjects=len(items),
            relations=len(relations),
            mode=self.options.mode,
            since=None if cutoff is None else cutoff.isoformat(),
        )
        size = self.options.page_size
        for start in range(0, len(items), size):
            yield from self._page(backend, items[start : start + size], relations)

    def read_all(
        self,
        relations: Sequence[str],
        subjects: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[Fact]:
        return list(self.read(relations, subjects=subjects, since=since))

    def _check_relations(self, relations: Sequence[str]) -> list[str]:
        for r in relations:
            if not isinstance(r, str) or not PROPERTY_ID.fullmatch(r):
                raise CatalogueError(
                    f"relation {r!r} is not a Wikidata property id like P36; fix [relations] enabled"
                )
            self.catalogue[r]  # CatalogueError for an id the catalogue does not know
        return list(dict.fromkeys(relations))

    def _subjects(
        self,
        backend: Backend,
        selection: SubjectSelection,
        relations: list[str],
        cutoff: datetime | None,
    ) -> list[str]:
        if selection.ids is not None and cutoff is None:
            return list(selection.ids)
        if selection.ids is not None:  # only the listed ids modified since the cut-off
            ids, size = list(selection.ids), self.options.page_size
            pages = [
                SubjectSelection(ids=tuple(ids[i : i + size])) for i in range(0, len(ids), size)
            ]
        else:
            pages = [selection]
        items: list[str] = []
        for page in pages:
            where = page.where(self.options.mode, relations)
            limit, offset = self.options.list_page_size, 0
            while True:
                rows = backend.select(q.subjects_query(where, cutoff, limit, offset))
                items.extend(r["item"].value for r in rows if "item" in r)
                if len(rows) < limit:
                    break
                offset += limit
        if selection.ids is not None:  # keep the caller's order
            found = set(items)
            return [i for i in selection.ids if i in found]
        return list(dict.fromkeys(items))

    def _page(self, backend: Backend, items: list[str], relations: list[str]) -> Iterator[Fact]:
        values = self._values(backend, items, relations)  # (item IRI, relation) -> object terms
        objects = [t.value for terms in values.values() for t in terms if t.kind == "iri"]
        entities = list(dict.fromkeys(items + objects))
        labels = _Labels()
        size = self.options.page_size
        for start in range(0, len(entities), size):
            for row in backend.select(
                q.entities_query(entities[start : start + size], self.language)
            ):
                self._add_label(labels, row)
        skipped = 0
        for (item, relation), terms in sorted(values.items()):
            fact = _fact(item, relation, terms, labels)
            if fact is None:
                skipped += 1
            else:
                yield fact
        if skipped:
            log.info("kb.skipped_unlabelled", facts=skipped, language=self.language)

    def _values(
        self, backend: Backend, items: list[str], relations: list[str]
    ) -> dict[tuple[str, str], set[Term]]:
        if self.options.mode == "truthy":
            rows, prefix = backend.select(q.truthy_query(items, relations)), q.WDT
        else:
            rows, prefix = backend.select(q.statements_query(items, relations)), q.P
        ranked: dict[tuple[str, str], dict[int, set[Term]]] = defaultdict(lambda: defaultdict(set))
        for row in rows:
            value = row["value"]
            if value.kind == "bnode":  # Wikidata's "unknown value"
                continue
            if (
                value.kind == "literal"
                and value.lang is not None
                and value.lang.lower() != self.language
            ):
                continue
            relation = row["prop"].value.removeprefix(prefix)
            if "statementProp" in row and row["statementProp"].value != q.PS + relation:
                continue  # a p:P36 statement's ps:P17 value: not this relation's
            rank = (
                q.RANKS.get(row["rank"].value, 1) if "rank" in row else 1
            )  # no rank triple: normal
            key = (row["item"].value, relation)
            ranked[key][rank].add(Term(value.kind, value.value))
        out: dict[tuple[str, str], set[Term]] = {}
        for key, by_rank in ranked.items():
            best = max(by_rank)
            if best > 0:  # deprecated statements are never the truth
                out[key] = by_rank[best]
        return out

    def _add_label(self, labels: _Labels, row: Row) -> None:
        entity, pred, value = row["entity"].value, row["pred"].value, row["value"].value
        if pred == LABEL:
            labels.label[entity] = min(value, labels.label.get(entity, value))
        elif pred == ALT_LABEL:
            labels.aliases[entity].add(value)
        elif pred == DATE_MODIFIED:
            stamp = _iso(value)
            if stamp is not None:
                labels.modified[entity] = max(stamp, labels.modified.get(entity, stamp))


def _fact(item: str, relation: str, terms: set[Term], labels: _Labels) -> Fact | None:
    """None when the subject or every object lacks a label: nothing to ask or teach."""
    object_labels: dict[str, str] = {}
    object_aliases: dict[str, tuple[str, ...]] = {}
    for term in terms:
        if term.kind == "literal":  # a literal value is its own label
            object_labels[term.value] = term.value
            continue
        oid = _entity_id(term.value)
        if term.value in labels.label:
            object_labels[oid] = labels.label[term.value]
        if labels.aliases.get(term.value):
            object_aliases[oid] = tuple(sorted(labels.aliases[term.value]))
    if item not in labels.label or not object_labels:
        return None
    return Fact(
        subject=_entity_id(item),
        relation=relation,
        objects=tuple(
            sorted(t.value if t.kind == "literal" else _entity_id(t.value) for t in terms)
        ),
        subject_label=labels.label[item],
        subject_aliases=tuple(sorted(labels.aliases.get(item, ()))),
        object_labels=dict(sorted(object_labels.items())),
        object_aliases=dict(sorted(object_aliases.items())),
        revision=labels.modified.get(item),
    )


def _entity_id(iri: str) -> str:
    """http://www.wikidata.org/entity/Q142 -> Q142; other IRIs stay whole."""
    return iri.removeprefix(q.WD) if iri.startswith(q.WD) else iri


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(value: str) -> str | None:
    """An xsd:dateTime lexical form -> ISO 8601 UTC with "Z" (readers differ in their forms)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
