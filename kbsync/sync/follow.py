"""`kbsync follow`: keep the snapshot in step with Wikidata by its change stream, as its bots do.

    1. where to start: the stored stream position (Last-Event-ID, else `since`). None yet: read
       the configured subjects whole (entity fetches), then start the stream from before that read.
    2. a gap: the newest event seen is older than the stream keeps ([kb] stream_window_s, about a
       week): read the missed edits from RecentChanges instead (it keeps 30 days; older than that
       is an error that asks for a dump reconcile, `kbsync bootstrap --dump FILE`), then stream from now.
    3. stream until caught up: keep `wikidatawiki` edits (and creations) of items, of watched items
       only (a subject of a synced relation in the snapshot, or an id in [kb] subjects); note each
       item's newest revision (an older or equal one is a duplicate or out of order: ignored); every
       `commit_every` events the rows and the stream position are committed in one transaction.
    4. fetch the items whose newest revision the snapshot lacks, `chunk` at a time, and diff them
       as `kbsync diff` does (sync/diff.py: compare, probe what changed, queue); then record the
       revision read. A kill anywhere repeats at most the last chunk, whose diff is idempotent:
       a fact already in the snapshot is unchanged, a request already open is never queued twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from kbsync.errors import SourceError
from kbsync.logs import get_logger
from kbsync.sources.eventstream import StreamEvent
from kbsync.sources.timeline import parse_time
from kbsync.store import followed
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.sync.diff import DiffReport

log = get_logger(__name__)

DIFF_COUNTS = ("read", "new", "changed", "unchanged", "probed", "agree", "queued", "superseded", "review",
               "held", "damaged")


class Stream(Protocol):
    def events(self, last_event_id: str | None = None, since: str | None = None,
               live_from: datetime | None = None) -> Iterable[StreamEvent]: ...


class RecentChanges(Protocol):
    def recent_changes(self, start: datetime, end: datetime) -> Iterable[dict[str, Any]]: ...


@dataclass(frozen=True)
class FollowOptions:
    relations: Sequence[str]
    configured: frozenset[str] = frozenset()     # [kb] subjects ids: watched before the snapshot has them
    wiki: str = "wikidatawiki"
    window: timedelta = timedelta(days=7)        # [kb] stream_window_s: what `since` can still reach
    backfill_max: timedelta = timedelta(days=30)  # what RecentChanges keeps
    commit_every: int = 1000                     # events per transaction
    chunk: int = 1000                            # items fetched and diffed at a time
    max_events: int | None = None                # stop after this many events (tests, benchmarks)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)  # [kb] as_of in replays
    live: bool = True                            # an event from the run's start on means caught up
                                                 # (not in a replay, whose events may all be later)
    run_id: str = ""
    config_hash: str = ""


@dataclass
class FollowReport:
    events: int = 0        # read from the stream
    wikidata: int = 0      # ... edits of items on the followed wiki
    watched: int = 0       # ... of watched items
    newer: int = 0         # ... that brought a newer revision (the rest: duplicates, out of order)
    backfilled: int = 0    # changes of watched items read from RecentChanges after a gap
    fetched: int = 0       # items fetched and diffed
    caught_up: bool = False
    seconds_stream: float = 0.0
    seconds_diff: float = 0.0
    diff: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIFF_COUNTS, 0))

    def add(self, report: DiffReport) -> None:
        for k in DIFF_COUNTS:
            self.diff[k] += int(getattr(report, k))

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def follow(db: Database, stream: Stream, recent: RecentChanges, diff_items: Callable[[list[str]], DiffReport],
           options: FollowOptions) -> FollowReport:
    """Steps 1-4 of the module docstring; `diff_items(ids)` diffs those items (a run_diff over
    an EntitySource of them) and commits."""
    o = options
    report = FollowReport()
    with db.session() as s:
        last_id, last_dt, since = followed.position(s)
    if last_id is None and since is None and last_dt is None:   # 1. never followed
        start = o.now()
        if o.configured:
            _diff_all(sorted(o.configured), diff_items, o.chunk, report)
        else:
            with db.session() as s:
                empty = not followed.watched_any(s, o.relations)
            if empty:
                log.warning("follow.nothing_watched", why="no [kb] subjects ids and no snapshot of these relations: "
                            "every edit is dropped; run kbsync bootstrap --dump FILE or set [kb] subjects")
        since = _iso(start)
        with db.session() as s:
            followed.set_position(s, None, None, since=since)
    newest = parse_time(last_dt or since or "")
    if newest is not None and o.now() - newest > o.window:    # 2. a gap the stream cannot fill
        since = _backfill(db, recent, newest, o, report)
        last_id = None
    t0 = time.perf_counter()
    _ingest(db, stream.events(last_id, since if last_id is None else None, live_from=o.now() if o.live else None), o, report)
    report.seconds_stream = time.perf_counter() - t0
    t0 = time.perf_counter()
    _diff_waiting(db, diff_items, o.chunk, report)                # 4.
    report.seconds_diff = time.perf_counter() - t0
    with db.session() as s:
        record_event(s, "follow", run_id=o.run_id, config_hash=o.config_hash, events=report.events,
                     watched=report.watched, newer=report.newer, backfilled=report.backfilled,
                     fetched=report.fetched, caught_up=report.caught_up, diff=dict(report.diff))
    log.info("follow_done", events=report.events, watched=report.watched, fetched=report.fetched,
             queued=report.diff["queued"], caught_up=report.caught_up)
    return report


def _ingest(db: Database, events: Iterable[StreamEvent], o: FollowOptions, report: FollowReport) -> None:
    """3. Note the watched items' newest revisions, a transaction per `commit_every` events."""
    batch: list[StreamEvent] = []
    for event in events:
        batch.append(event)
        report.events += 1
        if len(batch) >= o.commit_every:
            _commit(db, batch, o, report)
            batch = []
        if o.max_events is not None and report.events >= o.max_events:
            break
    else:
        report.caught_up = True
    if batch:
        _commit(db, batch, o, report)


def _commit(db: Database, batch: list[StreamEvent], o: FollowOptions, report: FollowReport) -> None:
    changes: dict[str, tuple[int, datetime | None]] = {}
    for event in batch:
        d = event.data
        if d.get("wiki") != o.wiki or d.get("type") not in ("edit", "new") or d.get("namespace") != 0:
            continue
        report.wikidata += 1
        title, revision = d.get("title"), (d.get("revision") or {}).get("new")
        if not isinstance(title, str) or not isinstance(revision, int):
            continue
        if title not in changes or revision > changes[title][0]:
            changes[title] = (revision, parse_time(event.dt) if event.dt else None)
    last = next((e for e in reversed(batch) if e.id is not None), None)
    newest = max((e.dt for e in batch if e.dt), default=None)
    with db.session() as s:
        keep = followed.watched(s, changes, o.relations, set(o.configured))
        report.watched += sum(1 for e in batch if e.data.get("title") in keep and e.data.get("wiki") == o.wiki)
        report.newer += followed.note(s, {k: v for k, v in changes.items() if k in keep})
        followed.set_position(s, last.id if last else None, newest)


def _backfill(db: Database, recent: RecentChanges, newest: datetime, o: FollowOptions,
              report: FollowReport) -> str:
    """2. Note the watched items RecentChanges lists since `newest`; the stream goes on from now."""
    now = o.now()
    if now - newest > o.backfill_max:
        raise SourceError(f"the follower last saw an event at {_iso(newest)}, {(now - newest).days} days ago: past "
                          f"the {o.backfill_max.days} days RecentChanges keeps, edits were missed; reconcile from a "
                          "recent dump (kbsync bootstrap --dump FILE), then follow again")
    log.warning("follow.gap", last_event=_iso(newest), days=round((now - newest).total_seconds() / 86400, 1),
                why="longer than the stream keeps: reading RecentChanges instead")
    page: dict[str, tuple[int, datetime | None]] = {}

    def flush() -> None:
        with db.session() as s:
            keep = followed.watched(s, page, o.relations, set(o.configured))
            report.backfilled += len(keep)
            followed.note(s, {k: v for k, v in page.items() if k in keep})
        page.clear()

    for change in recent.recent_changes(newest - timedelta(minutes=1), now):
        title, revision = change.get("title"), change.get("revid")
        if isinstance(title, str) and isinstance(revision, int) and (title not in page or revision > page[title][0]):
            page[title] = (revision, parse_time(str(change.get("timestamp", ""))))
        if len(page) >= o.commit_every:
            flush()
    flush()
    since = _iso(now)
    with db.session() as s:
        followed.set_position(s, None, since, since=since)
        record_event(s, "follow_backfill", run_id=o.run_id, config_hash=o.config_hash, since=_iso(newest),
                     until=since, items=report.backfilled)
    return since


def _diff_waiting(db: Database, diff_items: Callable[[list[str]], DiffReport], chunk: int,
                  report: FollowReport) -> None:
    """4. Fetch and diff the items waiting, a chunk at a time; then record the revisions read."""
    after = ""
    while True:
        with db.session() as s:
            rows = followed.waiting(s, chunk, after)
        if not rows:
            return
        report.add(diff_items([e for e, _ in rows]))
        report.fetched += len(rows)
        with db.session() as s:
            followed.done(s, rows)
        after = rows[-1][0]


def _diff_all(ids: list[str], diff_items: Callable[[list[str]], DiffReport], chunk: int,
              report: FollowReport) -> None:
    for start in range(0, len(ids), chunk):
        report.add(diff_items(ids[start:start + chunk]))
        report.fetched += len(ids[start:start + chunk])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
