"""A knowledge source over entity JSON: Wikidata's API, Special:EntityData, or a dump's scratch copy.

``EntitySource.read(relations, subjects)`` reads the given subjects (or ``[kb] subjects``' ids),
a page at a time, through an ``EntityFetcher``:

1. fetch the page's entities (whole: their claims, labels, aliases, modified)
2. their statements (``entity_json.add_statements``), and what is current as of ``as_of``
   (``reader.resolve_statements``, the timeline every reader shares)
3. the labels of the values they name, fetched (labels and aliases only) unless known already
   (a cache of ``label_cache`` entities spans the pages: countries, parties, clubs recur)
4. one Fact per (subject, relation), built by ``reader.facts_from`` as for RDF and SPARQL.

``since`` is ignored: whoever calls knows what changed (the change stream, a dump).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from kbsync.errors import CatalogueError, SourceError
from kbsync.sources import queries as q
from kbsync.sources.catalogue import PROPERTY_ID, Catalogue, load_catalogue
from kbsync.sources.entity_json import Entity, add_labels, add_statements, referenced_ids
from kbsync.sources.fact import Fact
from kbsync.sources.reader import Labels, ReadOptions, Statements, facts_from, resolve_statements
from kbsync.sources.subjects import subject_iri


class EntityFetcher(Protocol):
    def fetch(self, ids: Sequence[str], labels_only: bool = False) -> dict[str, Entity]:
        """id -> entity JSON for those of `ids` that exist; `labels_only`: labels, aliases, modified suffice."""
        ...


class EntityDict:
    """An EntityFetcher over entities in memory (an API answer read from a file, in tests)."""

    def __init__(self, entities: Mapping[str, Entity]):
        self.entities = entities

    def fetch(self, ids: Sequence[str], labels_only: bool = False) -> dict[str, Entity]:
        return {i: self.entities[i] for i in ids if i in self.entities}


class EntitySource:
    def __init__(self, fetcher: EntityFetcher, options: ReadOptions | None = None,
                 catalogue: Catalogue | None = None, label_cache: int = 20_000):
        self.fetcher = fetcher
        self.options = options or ReadOptions()
        self.language = q.check_language(self.options.language)
        self.catalogue = catalogue if catalogue is not None else load_catalogue()
        self.label_cache = label_cache

    def read(self, relations: Sequence[str], subjects: Sequence[str] | None = None,
             since: datetime | None = None) -> Iterator[Fact]:
        for r in relations:
            if not PROPERTY_ID.fullmatch(r):
                raise CatalogueError(f"relation {r!r} is not a Wikidata property id like P36; fix [relations] enabled")
            self.catalogue[r]
        ids = self._ids(subjects)
        as_of = self.options.as_of or datetime.now(UTC)
        cache: OrderedDict[str, Entity] = OrderedDict()
        size = self.options.page_size
        for start in range(0, len(ids), size):
            yield from self._page(ids[start:start + size], list(dict.fromkeys(relations)), as_of, cache)

    def read_all(self, relations: Sequence[str], subjects: Sequence[str] | None = None,
                 since: datetime | None = None) -> list[Fact]:
        return list(self.read(relations, subjects, since))

    def _ids(self, subjects: Sequence[str] | None) -> list[str]:
        iris = [subject_iri(s) for s in subjects] if subjects is not None else list(self.options.selection.ids or ())
        if subjects is None and self.options.selection.ids is None:
            raise SourceError("an entity source reads given subjects only: set [kb] subjects to entity ids, "
                              "or bootstrap the snapshot from a dump (kbsync bootstrap --dump FILE)")
        return list(dict.fromkeys(i.removeprefix(q.WD) for i in iris if i.startswith(q.WD)))

    def _page(self, ids: list[str], relations: list[str], as_of: datetime,
              cache: OrderedDict[str, Entity]) -> Iterator[Fact]:
        entities = self.fetcher.fetch(ids)
        statements: Statements = {}
        literals: set[str] = set()
        labels = Labels()
        for entity in entities.values():
            literals |= add_statements(statements, entity, relations, self.language)
            add_labels(labels, entity, self.language)
            self._remember(cache, entity)
        values = resolve_statements(statements, as_of, lambda r: self.catalogue[r].single_valued)
        wanted = [i for i in referenced_ids(statements, literals) if i not in entities]
        missing = [i for i in wanted if i not in cache]
        for entity in self.fetcher.fetch(missing, labels_only=True).values() if missing else ():
            self._remember(cache, entity)
        for i in wanted:
            if i in cache:
                add_labels(labels, cache[i], self.language)
        yield from facts_from(values, labels, literals, self.language)

    def _remember(self, cache: OrderedDict[str, Entity], entity: Entity) -> None:
        """Keep the label part of `entity` (not its claims) among the last `label_cache` seen."""
        lang = self.language
        cache[entity["id"]] = {"id": entity["id"], "labels": {lang: (entity.get("labels") or {}).get(lang)},
                               "aliases": {lang: (entity.get("aliases") or {}).get(lang, [])},
                               "modified": entity.get("modified")}
        cache.move_to_end(entity["id"])
        while len(cache) > self.label_cache:
            cache.popitem(last=False)
