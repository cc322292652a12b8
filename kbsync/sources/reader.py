"""Turning query results into Facts, the same way for every backend (rdflib, Oxigraph, HTTP).

A backend answers SELECT text with rows of ``Term``s; ``QueryReader`` pages through the
subjects, runs the queries of ``queries.py`` and builds the facts:

1. list the subjects (ids as given; or a subjects query, filtered by dateModified for ``since``)
2. per page of ``page_size`` subjects: the statements of each requested relation
   (statements, the default: ``p:``/``ps:`` with rank and time qualifiers; truthy: every
   ``wdt:`` value as an undated normal statement)
3. which are current as of ``as_of`` (default: the moment of the read), which are stale
   (ended or superseded) and why: ``timeline.resolve``
4. labels, aliases and dateModified of the page's subjects and objects
5. one Fact per (subject, relation) that has a subject label and a labelled current object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import structlog

from kbsync.errors import CatalogueError, ConfigError
from kbsync.sources import queries as q
from kbsync.sources.catalogue import PROPERTY_ID, Catalogue, load_catalogue
from kbsync.sources.fact import Fact
from kbsync.sources.subjects import SubjectSelection
from kbsync.sources.timeline import (
    LONG_AGO,
    NO_VALUE,
    NORMAL,
    Resolution,
    Statement,
    qualifier_moment,
    resolve,
)

log = structlog.get_logger(__name__)

UNREADABLE_JUDGED = {"start": "not begun: never current", "end": "ended at an unknown time",
                     "point": "not begun: never current"}

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
    """Answers SPARQL SELECT. An in-process backend also offers ``iter_select(query)``, an
    iterator over the rows as the engine produces them (the subject listing uses it)."""

    def select(self, query: str) -> list[Row]: ...


@dataclass(frozen=True)
class ReadOptions:
    mode: Literal["truthy", "statements"] = "statements"
    language: str = "en"
    page_size: int = 200  # subjects (and entities) per query, bound with VALUES
    list_page_size: int = 10_000  # subjects per page of the subjects query (LIMIT/OFFSET)
    overlap: timedelta = timedelta(minutes=10)  # since - overlap: edits racing the last read
    selection: SubjectSelection = field(default_factory=SubjectSelection)
    as_of: datetime | None = None  # what is current is decided as of this moment (None: now)


@dataclass
class Labels:
    """Labels (one language), aliases and dateModified of entities, by IRI: what facts are named by."""

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
        self.unreadable_dates = 0   # time qualifiers that could not be read (logged, judged conservatively)

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
        as_of = _utc(self.options.as_of) if self.options.as_of else datetime.now(UTC)
        subjects_read, unreadable_before = 0, self.unreadable_dates
        for page in self._subject_pages(backend, selection, relations, cutoff):
            subjects_read += len(page)
            yield from self._page(backend, page, relations, as_of)
        log.info(
            "kb.read",
            subjects=subjects_read,
            relations=len(relations),
            unreadable_dates=self.unreadable_dates - unreadable_before,
            mode=self.options.mode,
            since=None if cutoff is None else cutoff.isoformat(),
        )

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

    def _subject_pages(
        self,
        backend: Backend,
        selection: SubjectSelection,
        relations: list[str],
        cutoff: datetime | None,
    ) -> Iterator[list[str]]:
        """The subjects of the read, in pages of ``page_size``, as the listing comes in: a page
        is read before the next page of the listing is asked for (nothing holds them all)."""
        size = self.options.page_size
        if selection.ids is not None:  # the caller's order; with a cut-off, only those modified since
            ids = list(selection.ids)
            for start in range(0, len(ids), size):
                page = ids[start : start + size]
                if cutoff is not None:
                    where = SubjectSelection(ids=tuple(page)).where(self.options.mode, relations)
                    found = set(self._listing(backend, where, cutoff))
                    page = [i for i in page if i in found]
                if page:
                    yield page
            return
        page = []
        for item in self._listing(backend, selection.where(self.options.mode, relations), cutoff):
            page.append(item)
            if len(page) == size:
                yield page
                page = []
        if page:
            yield page

    def _listing(self, backend: Backend, where: str, cutoff: datetime | None) -> Iterator[str]:
        """Subject IRIs bound by `where`, each once: one streamed query where the backend streams
        (in process), else LIMIT/OFFSET pages of ``list_page_size`` (an endpoint)."""
        stream = getattr(backend, "iter_select", None)
        if stream is not None:
            for row in stream(q.subjects_query(where, cutoff, None, 0)):
                if "item" in row:
                    yield row["item"].value
            return
        limit, offset = self.options.list_page_size, 0
        while True:
            rows = backend.select(q.subjects_query(where, cutoff, limit, offset))
            yield from (r["item"].value for r in rows if "item" in r)
            if len(rows) < limit:
                return
            offset += limit

    def _page(
        self, backend: Backend, items: list[str], relations: list[str], as_of: datetime
    ) -> Iterator[Fact]:
        statements = self._statements(backend, items, relations)
        values = resolve_statements(statements, as_of, self._single_valued)
        literals = {st.value for s in statements.values() for st in s.values() if st.literal}
        entities = list(dict.fromkeys(items + objects_to_label(values, literals)))
        labels = Labels()
        size = self.options.page_size
        for start in range(0, len(entities), size):
            for row in backend.select(
                q.entities_query(entities[start : start + size], self.language)
            ):
                self._add_label(labels, row)
        yield from facts_from(values, labels, literals, self.language)

    def _single_valued(self, relation: str) -> bool:
        # truthy values carry no dates: every one stays acceptable, as wdt: says
        return self.options.mode == "statements" and self.catalogue[relation].single_valued

    def _statements(
        self, backend: Backend, items: list[str], relations: list[str]
    ) -> Statements:
        """(item IRI, relation) -> statement key -> Statement (values: IRIs or literal text)."""
        if self.options.mode == "truthy":
            rows, prefix = backend.select(q.truthy_query(items, relations)), q.WDT
        else:
            rows, prefix = backend.select(q.statements_query(items, relations)), q.P
        out: dict[tuple[str, str], dict[str, Statement]] = defaultdict(dict)
        for row in rows:
            if "noValue" in row:  # a "no value" statement: Term of the sentinel, its relation checked below
                value = Term("literal", NO_VALUE)
                row = {**row, "statementProp": Term("iri", row["noValue"].value.replace(q.WDNO, q.PS))}
            else:
                value = row["value"]
            if some_value(value):  # Wikidata's "unknown value": nothing to ask or teach
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
            key = row["statement"].value if "statement" in row else value.value
            st = out[row["item"].value, relation].get(key)
            if st is None:
                rank = q.RANKS.get(row["rank"].value, NORMAL) if "rank" in row else NORMAL
                st = out[row["item"].value, relation][key] = Statement(
                    value.value, rank, literal=value.kind == "literal" and value.value != NO_VALUE
                )
            for role, moments in (("start", st.starts), ("end", st.ends), ("point", st.points)):
                if _add_time(moments, row.get(role), role):
                    self.unreadable_dates += 1
                    log.warning("kb.unreadable_date", subject=_entity_id(row["item"].value), relation=relation,
                                value=_entity_id(value.value), role=role, literal=row[role].value,
                                judged=UNREADABLE_JUDGED[role])
        return out

    def _add_label(self, labels: Labels, row: Row) -> None:
        entity, pred, value = row["entity"].value, row["pred"].value, row["value"].value
        if pred == LABEL:
            labels.label[entity] = min(value, labels.label.get(entity, value))
        elif pred == ALT_LABEL:
            labels.aliases[entity].add(value)
        elif pred == DATE_MODIFIED:
            stamp = _iso(value)
            if stamp is not None:
                labels.modified[entity] = max(stamp, labels.modified.get(entity, stamp))


Statements = dict[tuple[str, str], dict[str, Statement]]  # (item IRI, relation) -> key -> Statement


def resolve_statements(statements: Statements, as_of: datetime,
                       single_valued: Callable[[str], bool]) -> dict[tuple[str, str], Resolution]:
    """(item, relation) -> what is current as of `as_of`, for those with a current value or "none"."""
    values: dict[tuple[str, str], Resolution] = {}
    for (item, relation), by_key in statements.items():
        resolution = resolve(by_key.values(), as_of, single_valued(relation))
        if resolution.current or resolution.none:
            values[item, relation] = resolution
    return values


def objects_to_label(values: dict[tuple[str, str], Resolution], literals: set[str]) -> list[str]:
    """The entity values (current and stale) whose labels the facts need, each once."""
    return list(dict.fromkeys(v for r in values.values() for v in (*r.current, *r.stale) if v not in literals))


def facts_from(values: dict[tuple[str, str], Resolution], labels: Labels, literals: set[str],
               language: str) -> Iterator[Fact]:
    """One Fact per resolved (item, relation) whose subject and a current object are labelled,
    by (item, relation); the others are counted in one log line."""
    skipped = 0
    for (item, relation), resolution in sorted(values.items()):
        fact = _fact(item, relation, resolution, labels, literals)
        if fact is None:
            skipped += 1
        else:
            yield fact
    if skipped:
        log.info("kb.skipped_unlabelled", facts=skipped, language=language)


def _fact(
    item: str, relation: str, resolution: Resolution, labels: Labels, literals: set[str]
) -> Fact | None:
    """None when the subject or every current object lacks a label: nothing to ask or teach."""
    object_labels: dict[str, str] = {}
    object_aliases: dict[str, tuple[str, ...]] = {}
    for value in (*resolution.current, *resolution.stale):
        oid = _entity_id(value)
        if value in literals:  # a literal value is its own label
            object_labels[oid] = value
            continue
        if value in labels.label:
            object_labels[oid] = labels.label[value]
        if labels.aliases.get(value):
            object_aliases[oid] = tuple(sorted(labels.aliases[value]))
    current = tuple(sorted(_entity_id(v) for v in resolution.current))
    if item not in labels.label or not (resolution.none or any(o in object_labels for o in current)):
        return None  # a current "none" is a fact too: the KB says no one holds it now
    stale = tuple(_entity_id(v) for v in resolution.stale if _entity_id(v) in object_labels)
    target = None if resolution.target is None else _entity_id(resolution.target)
    return Fact(
        subject=_entity_id(item),
        relation=relation,
        objects=current,
        subject_label=labels.label[item],
        subject_aliases=tuple(sorted(labels.aliases.get(item, ()))),
        object_labels=dict(sorted(object_labels.items())),
        object_aliases=dict(sorted(object_aliases.items())),
        revision=labels.modified.get(item),
        target=target if target in object_labels else None,
        stale=stale,
        why={_entity_id(v): w for v, w in resolution.why.items()},
    )


def some_value(term: Term) -> bool:
    """Wikidata's "some value" (unknown value): a blank node, or WDQS's /.well-known/genid/ IRI."""
    return term.kind == "bnode" or (term.kind == "iri" and q.GENID in term.value)


def _add_time(moments: list[datetime], term: Term | None, role: str) -> bool:
    """Add the moment `term` names. "Some value" is an unknown end (ended) and no start; a literal
    that cannot be read is judged as `qualifier_moment` says. True when the literal could not be read."""
    if term is None:
        return False
    unreadable = False
    if term.kind == "literal":
        moment, unreadable = qualifier_moment(term.value, role)
    else:
        moment = LONG_AGO if role == "end" else None
    if moment is not None and moment not in moments:
        moments.append(moment)
    return unreadable


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
