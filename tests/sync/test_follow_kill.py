"""kbsync follow killed (SIGKILL) at random points of a replayed stream of 10,000 recentchange
events, and run again until it finishes: the snapshot equals an uninterrupted run's, nothing is
missed (every watched item holds the state of its last edit) and nothing is queued twice.

The replay: 10,000 events, about 3 % edits of 100 watched items (some repeated by the other
datacentre, some out of order), the rest edits of other items and other wikis. The entity
server answers each item as of the newest edit the stream has sent (a KB that moves as the
stream plays), so a follower that lost an event would keep an older state."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sources.replay import fixture  # tests/ is on sys.path
from sqlalchemy import create_engine, text
from sync.test_processes import kbsync_cmd, write_config

from kbsync.store import db as store_db

pytestmark = pytest.mark.process

T0 = datetime(2025, 6, 1, tzinfo=UTC)
WATCHED = [f"Q93{n:06d}" for n in range(100)]
UA = "kbsync-tests/0 (https://kb.acme.test; tests@acme.test)"


def replay(count: int = 10_000, seed: int = 28) -> tuple[list[dict], dict[str, list[tuple[int, int]]]]:
    """The events, and per watched item its (offset, revision) edits."""
    rng = random.Random(seed)
    events: list[dict] = []
    edits: dict[str, list[tuple[int, int]]] = {}
    revision = 2_400_000_000
    while len(events) < count:
        offset, dt = len(events), T0 + timedelta(seconds=1 + len(events) // 10)
        roll = rng.random()
        if roll < 0.03:
            item = rng.choice(WATCHED)
            revision += 1
            events.append(fixture.recentchange(offset, item, revision, dt))
            edits.setdefault(item, []).append((offset, revision))
            if rng.random() < 0.2 and len(events) < count:        # the other datacentre repeats it
                events.append(fixture.recentchange(len(events), item, revision, dt, topic="codfw.mediawiki.recentchange"))
                edits[item].append((len(events) - 1, revision))
            elif rng.random() < 0.2 and len(events) < count:      # an older edit arrives late
                events.append(fixture.recentchange(len(events), item, revision - 1, dt))
                edits[item].append((len(events) - 1, revision - 1))
        elif roll < 0.8:
            revision += 1
            events.append(fixture.recentchange(offset, f"Q{rng.randrange(1, 10**8)}", revision, dt))
        else:
            events.append(fixture.recentchange(offset, f"Page {offset}", 10**9 + offset, dt, wiki="enwiki"))
    return events, edits


def servers(events: list[dict], edits: dict[str, list[tuple[int, int]]]):  # type: ignore[no-untyped-def]
    stream = fixture.StreamServer(count=len(events), event_at=events.__getitem__, drop_every=2500, idle_s=30.0,
                                  pace_s=0.0002)

    def make_entity(eid: str) -> dict | None:
        if eid.startswith("Q94"):
            return fixture.entity(eid, f"Person {eid[-2:]}")
        if eid not in WATCHED:
            return None
        seen = [rev for offset, rev in edits.get(eid, ()) if offset <= stream.high_water]
        rev = max(seen, default=1)
        holder = f"Q940000{rev % 40:02d}"
        claims = {"P6": [fixture.item_claim(eid, "P6", holder, 1, start="+2020-01-01T00:00:00Z")]}
        return fixture.entity(eid, f"Town {eid[-3:]}", claims, revision=rev)

    api = fixture.ApiServer(make_entity=make_entity)
    stream.start()
    api.start()
    return stream, api


def config(root: Path, model_dir: Path, stream, api) -> Path:  # type: ignore[no-untyped-def]
    root.mkdir()
    db_url = f"sqlite:///{root / 'kbsync.db'}"
    store_db.upgrade(db_url)
    cfg = write_config(root, model_dir, db_url)
    subjects = ", ".join(f'"{s}"' for s in WATCHED)
    cfg.write_text(cfg.read_text() + f"""
[relations]
enabled = ["P6"]
[kb]
source = "wikidata"
subjects = [{subjects}]
as_of = "2025-06-01T00:00:00Z"
eventstreams_url = "{stream.base}/v2/stream/recentchange"
api_url = "{api.api_url}"
entity_url = "{api.entity_url}"
user_agent = "{UA}"
stream_idle_s = 1.0
follow_chunk = 50
[probe]
max_new_tokens = 2
batch_size = 64
""")
    return cfg


def follow(cfg: Path, kill_when: Callable[[], bool] | None = None) -> int | None:
    """Run the follower; SIGKILL it as soon as `kill_when()` holds (None: it ran to the end first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    env["OMP_NUM_THREADS"] = "1"   # a tiny model: threads only contend for the shared cores (60 s -> 16 s a run)
    process = subprocess.Popen(kbsync_cmd(cfg, "follow", "--until-caught-up"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while kill_when is not None and process.poll() is None:
            if kill_when():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return None
            time.sleep(0.01)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        return process.returncode
    finally:
        if process.poll() is None:
            process.kill()


def state(cfg: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    url = next(line.split('"')[1] for line in cfg.read_text().splitlines() if line.startswith("url = "))
    engine = create_engine(url)
    with engine.connect() as c:
        facts = c.execute(text("SELECT subject, relation, objects, content_hash FROM kb_facts ORDER BY 1, 2")).all()
        queue = c.execute(text("SELECT subject, relation, target_new, content_hash, state FROM edit_requests "
                               "ORDER BY 1, 2, 3, 4, 5")).all()
        twice = c.execute(text("SELECT subject, relation, content_hash, COUNT(*) FROM edit_requests "
                               "GROUP BY 1, 2, 3 HAVING COUNT(*) > 1")).all()
    engine.dispose()
    return [tuple(r) for r in facts], [tuple(r) for r in queue], [tuple(r) for r in twice]


@pytest.fixture
def events() -> Iterator[tuple[list[dict], dict]]:
    yield replay()


def test_follow_killed_at_random_points_ends_as_an_uninterrupted_run(tmp_path, tiny_model_dir, events) -> None:
    evts, edits = events
    assert len(evts) == 10_000 and 200 < sum(len(v) for v in edits.values()) < 600
    stream, api = servers(evts, edits)
    cfg = config(tmp_path / "whole", tiny_model_dir, stream, api)
    follow(cfg)
    whole = state(cfg)
    calls_whole = len(api.requests)
    stream.stop()
    api.stop()

    stream, api = servers(evts, edits)
    cfg = config(tmp_path / "killed", tiny_model_dir, stream, api)
    rng = random.Random(7)
    first, second = sorted(rng.sample(range(500, 9500), 2))
    kill_points = [   # random points of each phase: the initial read, the stream (twice), the fetches and diffs
        lambda: len(api.requests) >= rng.randint(1, 4),
        lambda: stream.high_water >= first,
        lambda: stream.high_water >= second,
        lambda: stream.high_water >= len(evts) - 1 and len(api.requests) >= calls_whole - rng.randint(1, 10),
    ]
    kills = sum(follow(cfg, when) is None for when in kill_points)
    follow(cfg)
    killed = state(cfg)
    stream.stop()
    api.stop()
    assert kills == 4
    assert len(stream.connections) > 2      # it resumed: by Last-Event-ID after the first run's start
    facts, queue, twice = killed
    assert facts == whole[0] and len(facts) == 100
    holders = {s: objs[0] if isinstance(objs, list) else objs for s, _, objs, _ in facts}
    last = {item: max(rev for _, rev in e) for item, e in edits.items()}
    assert all(f"Q940000{last[i] % 40:02d}" in str(holders[i]) for i in last)   # nothing missed
    assert twice == [] and queue == whole[1]                                     # nothing queued twice
