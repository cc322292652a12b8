"""The change-stream follower on a replayed day at Wikidata's scale (issue 28): events/s and peak RSS.

    python benchmarks/follow_day.py [--events 1250000] [--watched 5000] [--work DIR] [--json OUT]

A child process serves, on 127.0.0.1, the local EventStreams and API stand-ins of
``wikidata_fixture.py``: a day of ``recentchange`` events made as they are sent (nothing holds
the day), 80 % ``wikidatawiki`` item edits (1,000,000 of the default 1,250,000 events), the rest
other wikis; 1 event in 80 (1.6 % of the Wikidata edits, a harder day than the 1 % of issue 28)
edits one of ``--watched`` items, whose
entity JSON the API server answers as of the newest edit sent. The follower runs in this process,
as ``kbsync follow --until-caught-up --snapshot-only`` would (the model's probing is not measured:
it is the diff's, benchmarks/diff_scale.py and probe_speed.py measure it):

1. a first run reads the watched items whole (their snapshot), with the stream standing at the
   day's end;
2. the position is set back to the day's start, and the measured run reads the day's stream,
   fetches the changed items (wbgetentities, 50 a call) and records them in the snapshot.

Real time is 1 day = 86,400 s: a day's events at N events/s is N / (events / 86,400) times real
time. Peak RSS is this process's (ru_maxrss), with torch and transformers imported as any kbsync
process that can probe has them; the stream's memory does not grow with the day's length.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wikidata_fixture as fx  # noqa: E402

T0 = datetime(2025, 6, 1, tzinfo=UTC)
DAY = 86_400
UA = "kbsync-bench/0 (https://kb.acme.test; bench@acme.test)"


def watched_ids(n: int) -> list[str]:
    return [f"Q95{w:07d}" for w in range(n)]


def serve(events: int, watched: int, ports: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ids = watched_ids(watched)
    step = DAY / events

    def event_at(k: int) -> dict:
        dt = T0 + timedelta(seconds=k * step)
        if k % 5 == 4:
            return fx.recentchange(k, f"Page {k}", 1_300_000_000 + k, dt, wiki="enwiki")
        title = ids[(k // 80) % watched] if k % 80 == 7 else f"Q{(k * 2654435761) % 120_000_000 + 1}"
        return fx.recentchange(k, title, 2_500_000_000 + k, dt)

    stream = fx.StreamServer(count=events, event_at=event_at, idle_s=60.0)

    def make_entity(eid: str) -> dict | None:
        if eid.startswith("Q96"):
            return fx.entity(eid, f"Person {eid[3:]}")
        if not eid.startswith("Q95"):
            return None
        w = int(eid[3:])
        last = (stream.high_water - 7) // 80 - w                     # edits of w: k = 80 (w + watched j) + 7
        edits = -1 if last < 0 else last // watched
        holder = f"Q96{(w + edits + 1) % 1000:07d}"
        claims = {"P6": [fx.item_claim(eid, "P6", holder, 1, start="+2020-01-01T00:00:00Z")]}
        return fx.entity(eid, f"Town {w}", claims, revision=2_500_000_000 + max(edits, 0))

    api = fx.ApiServer(make_entity=make_entity)
    stream.start()
    api.start()
    ports.put((stream.base, api.api_url, api.entity_url))
    while True:
        time.sleep(3600)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_250_000)
    parser.add_argument("--watched", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=Path(".bench-follow"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=serve, args=(args.events, args.watched, ports), daemon=True)
    server.start()          # forked before kbsync (and torch) is imported: the servers stay light
    stream_url, api_url, entity_url = ports.get(timeout=60)

    from kbsync.config import Settings
    from kbsync.store import db as store_db
    from kbsync.store import followed
    from kbsync.store.snapshot import set_value
    from kbsync.sync.from_settings import follow_from_settings

    state = args.work / f"state-{int(time.time())}"
    state.mkdir(parents=True)
    url = f"sqlite:///{state / 'kbsync.db'}"
    store_db.upgrade(url)
    end = T0 + timedelta(seconds=DAY)
    settings = Settings.model_validate({
        "state": {"dir": str(state)}, "database": {"url": url}, "relations": {"enabled": ["P6"]},
        "kb": {"source": "wikidata", "subjects": watched_ids(args.watched), "as_of": end.isoformat(),
               "eventstreams_url": stream_url + "/v2/stream/recentchange", "api_url": api_url,
               "entity_url": entity_url, "user_agent": UA, "stream_idle_s": 2.0, "follow_chunk": 1000}})
    db = store_db.open_database(url)
    rss_start = rss_mb()
    t0 = time.perf_counter()
    first = follow_from_settings(settings, db, state, run_id="initial", snapshot_only=True)
    initial_s = time.perf_counter() - t0
    with db.session() as s:       # back to the day's start: the measured run replays the whole day
        set_value(s, followed.LAST_EVENT_ID, "")
        set_value(s, followed.LAST_DT, "")
        set_value(s, followed.SINCE, fx.iso(T0))
    rss_before = rss_mb()
    t0 = time.perf_counter()
    day = follow_from_settings(settings, db, state, run_id="day", snapshot_only=True)
    seconds = time.perf_counter() - t0 - settings.kb.stream_idle_s   # the idle wait that says "caught up"
    server.terminate()
    rate = day.events / seconds
    row = {"events": day.events, "wikidata_edits": day.wikidata, "watched_events": day.watched,
           "items_fetched": day.fetched, "facts_changed": day.diff["changed"], "initial_items": first.fetched,
           "initial_s": round(initial_s, 1), "seconds": round(seconds, 1),
           "seconds_stream": round(day.seconds_stream - settings.kb.stream_idle_s, 1),
           "seconds_fetch_diff": round(day.seconds_diff, 1), "events_per_s": round(rate),
           "times_real_time": round(rate / (args.events / DAY), 1), "peak_rss_mb_start": round(rss_start),
           "peak_rss_mb_before_day": round(rss_before), "peak_rss_mb": round(rss_mb()),
           "load_1min": round(os.getloadavg()[0], 1)}
    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
