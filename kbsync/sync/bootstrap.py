"""`kbsync bootstrap --dump FILE`: the snapshot from Wikidata's JSON dump; later, a reconcile.

    1. stream the dump into a scratch file: every entity's names, the watched items' claims
       (sources/dump.py; bounded memory, on disk beside the state)
    2. diff it whole, as `kbsync diff` reads a KB whole (sync/diff.py): into an empty snapshot it is
       recorded as it is (snapshot only: nothing probed, nothing queued, unless `probe`); into a
       snapshot that exists, it is a reconcile: what changed since (edits the change stream
       missed) is probed and queued
    3. the follower's position: the items the dump holds are done up to the dump's revision, and
       the stream resumes from the dump's newest edit unless it already stands later (a gap is
       then read from RecentChanges by `kbsync follow`)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kbsync.logs import get_logger
from kbsync.model.loading import LoadedModel
from kbsync.sources.catalogue import Catalogue
from kbsync.sources.dump import DumpScratch, DumpSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.timeline import parse_time
from kbsync.store import followed, snapshot
from kbsync.store.db import Database
from kbsync.sync.diff import DiffOptions, DiffReport, run_diff

log = get_logger(__name__)


@dataclass
class BootstrapReport:
    entities: int = 0          # in the dump
    watched: int = 0           # ... kept: items with a synced relation (or the configured ids)
    newest: str | None = None  # the dump's newest edit (its entities' modified)
    reconcile: bool = False    # the snapshot held these relations before: changes were probed and queued
    diff: DiffReport | None = None


def bootstrap(db: Database, path: Path, catalogue: Catalogue, load_model: Callable[[], LoadedModel],
              template: DiffOptions, read: ReadOptions, only: set[str] | None, scratch: Path | None,
              probe: bool = False) -> BootstrapReport:
    """`template`: the diff's settings (relations, probing, run id); its subjects are ignored."""
    report = BootstrapReport()
    relations: Sequence[str] = template.relations
    with db.session() as s:
        report.reconcile = snapshot.count_in_scope(s, list(relations)) > 0
    with DumpScratch(scratch) as dump:
        loaded = dump.load(path, relations, read.language, only)
        report.entities, report.watched, report.newest = loaded["entities"], loaded["watched"], loaded["newest"]
        options = DiffOptions(**{**template.__dict__, "subjects": None,
                                 "snapshot_only": template.snapshot_only or not (report.reconcile or probe)})
        report.diff = run_diff(db, DumpSource(dump, read, catalogue), catalogue, load_model, options)
        if options.dry_run:
            return report
        with db.session() as s:   # items the follower was waiting for: the dump's revision is done
            after = ""
            while rows := followed.waiting(s, 1000, after):
                revisions = dump.revision_of([e for e, _ in rows])
                followed.done(s, [(e, revisions[e]) for e, _ in rows if revisions.get(e)])
                after = rows[-1][0]
    _resume_from(db, report.newest)
    log.info("bootstrap_done", entities=report.entities, watched=report.watched, reconcile=report.reconcile,
             queued=report.diff.queued)
    return report


def _resume_from(db: Database, newest: str | None) -> None:
    """The stream goes on from the dump's newest edit, unless it stands later already."""
    moment = parse_time(newest or "")
    if moment is None:
        return
    with db.session() as s:
        _, last_dt, since = followed.position(s)
        stands = max((t for t in (parse_time(last_dt or ""), parse_time(since or "")) if t), default=None)
        if stands is None or stands < moment:
            iso = _iso(moment)
            followed.set_position(s, None, iso, since=iso)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
