"""One diff run's read, spilled to a scratch SQLite file so that diff never holds it whole.

`kbsync diff` reads the KB into a `Staging` (a fact per (relation, subject), in that order),
then walks it a chunk at a time: compare with the snapshot (each fact gets its status and,
if it is to be probed, its place in the probe order), probe, queue, save. Memory holds one
chunk; the file lives in a temporary directory (the state directory's, under diff) and is
removed when the run ends, whatever the outcome.

Probe order, as before chunking: new facts, then changed ones (each by relation, subject),
then the rotating sample of unchanged facts (longest unprobed first); with --full, every
fact not held by [kb] settle_s, by relation, subject.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from kbsync.durable import scratch_directory
from kbsync.model.probe import ProbeResult
from kbsync.sources.fact import Fact

NEW, CHANGED, SAMPLE = 0, 1, 2  # probe ranks: the order facts are probed and queued in

_SCHEMA = """
CREATE TABLE facts (
    relation TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT,                          -- new | changed | unchanged | held (after compare)
    probe_rank INTEGER, probe_pos INTEGER NOT NULL DEFAULT 0,   -- NULL rank: not probed
    result TEXT,                          -- the probe result, JSON
    PRIMARY KEY (relation, subject)
) WITHOUT ROWID;
CREATE INDEX facts_probe ON facts (probe_rank, probe_pos, relation, subject) WHERE probe_rank IS NOT NULL;
"""


class Staging:
    def __init__(self, directory: Path | None = None, chunk: int = 1000):
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.chunk = chunk
        self._directory = directory
        self._buffer: list[tuple[str, str, str]] = []

    def __enter__(self) -> Staging:
        self._tmp = scratch_directory(self._directory, "kbsync-diff-")
        self.db = sqlite3.connect(Path(self._tmp.name) / "read.db", isolation_level=None)
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000;"
                              + _SCHEMA)
        self.db.execute("BEGIN")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.db.close()
        self._tmp.cleanup()

    # -- the read -------------------------------------------------------------------------
    def add(self, fact: Fact) -> None:
        self._buffer.append((fact.relation, fact.subject, fact.to_json()))
        if len(self._buffer) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        self.db.executemany("INSERT OR REPLACE INTO facts (relation, subject, body) VALUES (?, ?, ?)", self._buffer)
        self._buffer.clear()

    def count(self) -> int:
        self.flush()
        return int(self.db.execute("SELECT COUNT(*) FROM facts").fetchone()[0])

    def missing_subjects(self, subjects: Iterable[str]) -> list[str]:
        """Those of `subjects` that no staged fact has, sorted."""
        self.flush()
        wanted = sorted(set(subjects))
        found: set[str] = set()
        for start in range(0, len(wanted), self.chunk):
            page = wanted[start:start + self.chunk]
            marks = ",".join("?" * len(page))
            found.update(r[0] for r in self.db.execute(f"SELECT subject FROM facts WHERE subject IN ({marks})", page))
        return [s for s in wanted if s not in found]

    def keep_first(self, limit: int) -> None:
        """Drop every fact after the first `limit` in (relation, subject) order (--limit)."""
        self.flush()
        cut = self.db.execute("SELECT relation, subject FROM facts ORDER BY relation, subject LIMIT 1 OFFSET ?",
                              (limit,)).fetchone()
        if cut is not None:
            self.db.execute("DELETE FROM facts WHERE (relation, subject) >= (?, ?)", cut)

    # -- walking it -------------------------------------------------------------------------
    def chunks(self) -> Iterator[list[tuple[Fact, str | None, bool]]]:
        """Every fact, a chunk at a time, by (relation, subject): (fact, status, probed)."""
        self.flush()
        last: tuple[str, str] = ("", "")
        while True:
            rows = self.db.execute(
                "SELECT relation, subject, body, status, probe_rank IS NOT NULL FROM facts "
                "WHERE (relation, subject) > (?, ?) ORDER BY relation, subject LIMIT ?", (*last, self.chunk)).fetchall()
            if not rows:
                return
            last = (rows[-1][0], rows[-1][1])
            yield [(Fact.from_json(body), status, bool(probed)) for _, _, body, status, probed in rows]

    def mark(self, statuses: Iterable[tuple[Fact, str, int | None]]) -> None:
        """Record each fact's status and probe rank (None: not probed)."""
        self.db.executemany("UPDATE facts SET status = ?, probe_rank = ? WHERE relation = ? AND subject = ?",
                            [(status, rank, f.relation, f.subject) for f, status, rank in statuses])

    def mark_sample(self, keys: list[tuple[str, str]]) -> None:
        """The rotating sample, (subject, relation) in probe order."""
        self.db.executemany("UPDATE facts SET probe_rank = ?, probe_pos = ? WHERE subject = ? AND relation = ?",
                            [(SAMPLE, i, s, r) for i, (s, r) in enumerate(keys)])

    def probe_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM facts WHERE probe_rank IS NOT NULL").fetchone()[0])

    def to_probe(self, size: int | None = None) -> Iterator[list[tuple[Fact, str, ProbeResult | None]]]:
        """The facts to probe in probe order, `size` at a time: (fact, status, result once stored)."""
        size = size or self.chunk
        last: tuple[int, int, str, str] = (-1, -1, "", "")
        while True:
            rows = self.db.execute(
                "SELECT probe_rank, probe_pos, relation, subject, body, status, result FROM facts "
                "WHERE probe_rank IS NOT NULL AND (probe_rank, probe_pos, relation, subject) > (?, ?, ?, ?) "
                "ORDER BY probe_rank, probe_pos, relation, subject LIMIT ?", (*last, size)).fetchall()
            if not rows:
                return
            last = rows[-1][:4]
            yield [(Fact.from_json(body), status, None if result is None else ProbeResult(*json.loads(result)))
                   for *_, body, status, result in rows]

    def store_results(self, facts: list[Fact], results: list[ProbeResult]) -> None:
        self.db.executemany(
            "UPDATE facts SET result = ? WHERE relation = ? AND subject = ?",
            [(json.dumps([r.answer, r.agrees, r.kb_logprob, r.answer_logprob, r.matched]), f.relation, f.subject)
             for f, r in zip(facts, results, strict=True)])
