"""Wikidata's JSON dump (``latest-all.json.gz`` / ``.bz2``) as a knowledge source, in bounded memory.

The dump is one JSON array with one entity a line::

    [
    {"type":"item","id":"Q31","labels":{...},"claims":{...},"modified":"...","lastrevid":...},
    {"type":"item","id":"Q8","labels":{...},...}
    ]

``DumpScratch.load`` streams it once (gzip, bz2 or plain) and keeps, in a scratch SQLite file
on disk, what a read needs: the label, aliases (one language) and modified time of every
entity (any of them may be a value), and the claims of the synced relations of the watched
items (those with one of the relations; with ``[kb] subjects`` ids, only those). ``DumpSource``
then reads the watched items a page at a time through ``EntitySource`` (entities.py), so a dump
gives the same facts as the API or the RDF readers. Memory holds a page, never the dump.
"""

from __future__ import annotations

import bz2
import gzip
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import structlog

from kbsync.durable import scratch_directory
from kbsync.errors import SourceError
from kbsync.sources.catalogue import Catalogue
from kbsync.sources.entities import EntitySource
from kbsync.sources.entity_json import Entity, slim_claim
from kbsync.sources.fact import Fact
from kbsync.sources.reader import ReadOptions

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE labels (id TEXT PRIMARY KEY, body TEXT NOT NULL);     -- rowid tables: bodies are large
CREATE TABLE watched (id TEXT PRIMARY KEY, body TEXT NOT NULL, revision INTEGER);
"""


def open_dump(path: Path) -> IO[bytes]:
    name = path.name
    if not path.is_file():
        raise SourceError(f"dump {path} does not exist; give a Wikidata JSON dump (.json.gz or .json.bz2)")
    if name.endswith(".json.gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if name.endswith(".json.bz2"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    if name.endswith(".json"):
        return path.open("rb")
    raise SourceError(f"dump {path}: not .json.gz, .json.bz2 or .json; give a Wikidata JSON dump")


def entities(path: Path) -> Iterator[Entity]:
    """Each entity of the dump, as it comes; SourceError naming the line for one that does not read."""
    with open_dump(path) as f:
        try:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if line in (b"[", b"]", b""):
                    continue
                if line.endswith(b","):
                    line = line[:-1]
                try:
                    entity = json.loads(line)
                except ValueError as exc:
                    raise SourceError(f"dump {path}: line {number} is not an entity in JSON ({exc}); "
                                      "is it a Wikidata JSON dump, and whole?") from exc
                if isinstance(entity, dict) and "id" in entity:
                    yield entity
        except (OSError, EOFError) as exc:   # a truncated or corrupt archive
            raise SourceError(f"dump {path} cannot be read: {exc}; download it again") from exc


class DumpScratch:
    """The scratch copy of a dump: `load` it, then `fetch` entities from it (an EntityFetcher)."""

    def __init__(self, directory: Path | None = None):
        self._directory = directory

    def __enter__(self) -> DumpScratch:
        self._tmp = scratch_directory(self._directory, "kbsync-dump-")
        self.db = sqlite3.connect(Path(self._tmp.name) / "dump.db", isolation_level=None)
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000;" + _SCHEMA)
        self.db.execute("BEGIN")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.db.close()
        self._tmp.cleanup()

    def load(self, path: Path, relations: Sequence[str], language: str, only: set[str] | None = None,
             batch: int = 5000) -> dict[str, Any]:
        """Stream the dump in; returns {entities, watched, newest (modified, ISO)}."""
        labels: list[tuple[str, str]] = []
        watched: list[tuple[str, str, int | None]] = []
        seen = kept = 0
        newest = ""
        for entity in entities(path):
            seen += 1
            eid = entity["id"]
            label = (entity.get("labels") or {}).get(language)
            names: dict[str, Any] = {"id": eid, "modified": entity.get("modified")}
            if label:
                names["labels"] = {language: {"value": label.get("value")}}
            aliases = (entity.get("aliases") or {}).get(language)
            if aliases:
                names["aliases"] = {language: [{"value": a.get("value")} for a in aliases]}
            labels.append((eid, json.dumps(names, separators=(",", ":"), ensure_ascii=False)))
            newest = max(newest, str(entity.get("modified") or ""))
            claims = entity.get("claims") or {}
            if (only is None or eid in only) and any(r in claims for r in relations):
                kept += 1
                body = names | {"claims": {r: [slim_claim(c) for c in claims[r]] for r in relations if r in claims}}
                watched.append((eid, json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                                entity.get("lastrevid")))
            if len(labels) >= batch:
                self._flush(labels, watched)
        self._flush(labels, watched)
        log.info("dump.loaded", path=str(path), entities=seen, watched=kept)
        return {"entities": seen, "watched": kept, "newest": newest or None}

    def _flush(self, labels: list[tuple[str, str]], watched: list[tuple[str, str, int | None]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?)", labels)
        self.db.executemany("INSERT OR REPLACE INTO watched VALUES (?, ?, ?)", watched)
        labels.clear()
        watched.clear()

    def fetch(self, ids: Sequence[str], labels_only: bool = False) -> dict[str, Entity]:
        table = "labels" if labels_only else "watched"
        out: dict[str, Entity] = {}
        for start in range(0, len(ids), 500):
            page = list(ids[start:start + 500])
            marks = ",".join("?" * len(page))
            for eid, body in self.db.execute(f"SELECT id, body FROM {table} WHERE id IN ({marks})", page):
                out[eid] = json.loads(body)
        return out

    def watched_pages(self, size: int) -> Iterator[list[str]]:
        last = ""
        while True:
            page = [r[0] for r in self.db.execute("SELECT id FROM watched WHERE id > ? ORDER BY id LIMIT ?",
                                                  (last, size))]
            if not page:
                return
            yield page
            last = page[-1]

    def revision_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> lastrevid of those of `ids` that are watched items of the dump."""
        marks = ",".join("?" * len(ids))
        return {e: int(r or 0) for e, r in self.db.execute(f"SELECT id, revision FROM watched WHERE id IN ({marks})",
                                                             list(ids))}


class DumpSource:
    """A KnowledgeSource over a loaded DumpScratch: every watched item (or the given subjects)."""

    def __init__(self, scratch: DumpScratch, options: ReadOptions | None = None, catalogue: Catalogue | None = None):
        self.scratch = scratch
        self.entities = EntitySource(scratch, options=options, catalogue=catalogue)

    def read(self, relations: Sequence[str], subjects: Sequence[str] | None = None,
             since: datetime | None = None) -> Iterator[Fact]:
        if subjects is not None:
            yield from self.entities.read(relations, subjects)
            return
        for page in self.scratch.watched_pages(self.entities.options.page_size * 10):
            yield from self.entities.read(relations, page)
