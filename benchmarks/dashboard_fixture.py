"""A seeded audit database of dashboard size: 100,000 edit requests in 2,000 batches by default.

    python benchmarks/dashboard_fixture.py sqlite:///big.db [--requests N] [--batches N] [--seed S]

Rows are written as the real flow leaves them (a transition per state change, checks per edit,
a model version per verified batch and per rollback, events), straight into a freshly migrated
database with bulk inserts; no model is involved. Mostly verified batches, some failed (their
requests failed with realistic reasons), some rolled back, the rest of the queue pending.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbsync.store import db as store_db  # noqa: E402
from kbsync.store.models import (  # noqa: E402
    Batch,
    EditCheck,
    EditRequestRow,
    Event,
    KbFact,
    ModelVersion,
    Probe,
    RequestTransition,
)

RELATIONS = ["P36", "P37", "P17", "P19", "P27", "P106", "P127", "P131", "P140", "P159"]
EVENT = {"host": "bench", "pid": 1, "kbsync_version": "0", "config_hash": "", "run_id": "bench", "actor": "bench"}


def sha(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def chunks(rows: list[dict], n: int = 5000):  # type: ignore[no-untyped-def]
    for i in range(0, len(rows), n):
        yield rows[i:i + n]


def build(url: str, requests: int = 100_000, batches: int = 2_000, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    store_db.upgrade(url)
    db = store_db.open_database(url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    per_batch = max(1, int(requests * 0.85) // batches)
    facts, reqs, trans, checks, probes, versions, batch_rows, events = [], [], [], [], [], [], [], []
    active: list[int] = []
    version_id = 0
    rid = 0

    def request(subject: str, relation: str, label: str, at: datetime, state: str) -> dict:
        nonlocal rid
        rid += 1
        row = {"id": rid, "subject": subject, "relation": relation, "subject_label": label,
                "prompt": f"The {relation} of {{}} is", "target_new": f"New{rid}", "target_new_id": f"Q{rid + 5_000_000}",
                "target_old": f"Old{rid}", "acceptable": [f"New{rid}"], "paraphrases": [f"{{}} has {relation}"],
                "kb_revision": str(rid), "content_hash": sha(subject, relation, rid), "state": state,
                "state_reason": "", "state_changed_at": at, "batch_id": None, "attempts": 0, "created_at": at}
        reqs.append(row)
        return row

    def move(row: dict, to: str, reason: str, at: datetime, batch_id: int | None = None) -> None:
        trans.append({"request_id": row["id"], "from_state": row["state"],
                      "to_state": to, "reason": reason, "batch_id": batch_id, "run_id": "bench", "at": at})
        row.update(state=to, state_reason=reason, state_changed_at=at, batch_id=batch_id or row["batch_id"])

    for b in range(1, batches + 1):
        at = t0 + timedelta(minutes=30 * b)
        fate = "failed" if b % 20 == 3 else "rolled_back" if b % 33 == 5 else "verified"   # 5 % and 3 %
        rows = []
        for _ in range(per_batch):
            i = rid + 1
            subject, relation = f"Q{1000 + i}", RELATIONS[i % len(RELATIONS)]
            label = f"Entity {i}"
            row = request(subject, relation, label, at - timedelta(minutes=20), "pending")
            trans.append({"request_id": row["id"], "from_state": None, "to_state": "pending", "reason": "diff: KB disagrees",
                          "batch_id": None, "run_id": "bench", "at": row["created_at"]})
            move(row, "claimed", "claimed by bench", at, None)
            row["attempts"] = 1
            facts.append({"subject": subject, "relation": relation, "subject_label": label, "objects": [row["target_new_id"]],
                          "labels": {"object_labels": {row["target_new_id"]: row["target_new"]}},
                          "content_hash": row["content_hash"], "revision": row["kb_revision"], "first_seen": at,
                          "last_seen": at, "last_changed": at})
            probes.append({"run_id": "bench", "subject": subject, "relation": relation, "prompt": f"The {relation} of {label} is",
                           "answer": row["target_old"], "agrees": False, "kb_logprob": -5.0, "answer_logprob": -1.0,
                           "content_hash": row["content_hash"], "model_version_id": version_id or None,
                           "probed_at": row["created_at"]})
            rows.append(row)
        shares = {"efficacy": rng.uniform(0.9, 1.0), "efficacy_acc": rng.uniform(0.6, 1.0),
                  "paraphrase": rng.uniform(0.5, 1.0), "neighbour": rng.uniform(0.8, 1.0)}
        batch = {"id": b, "model_key": "bench", "state": fate, "state_reason": "", "algorithm": "memit", "hparams": {},
                 "n_edits": len(rows), "version_before_id": version_id or None, "version_after_id": None,
                 "delta_path": None, "delta_sha256": None, "delta_bytes": None,
                 "timings": {"total_s": 10.0}, "metrics": shares, "worker": "bench:1", "run_id": "bench",
                 "started_at": at, "finished_at": at + timedelta(minutes=2)}
        if fate == "failed":
            shares["efficacy"] = rng.uniform(0.3, 0.85)
            batch["state_reason"] = f"below thresholds: efficacy {shares['efficacy']:.2f} < 0.90"
            for row in rows:
                move(row, "failed", f"batch {b} {batch['state_reason']}", at + timedelta(minutes=2), b)
            events.append(EVENT | {"at": at, "kind": "batch_failed", "batch_id": b, "ok": False, "details": {}})
        else:
            active.append(b)
            version_id += 1
            versions.append({"id": version_id, "model_key": "bench", "parent_id": version_id - 1 or None,
                             "batch_ids": list(active), "weights_sha256": sha("w", version_id), "path": None,
                             "is_current": False, "created_at": at, "reason": f"batch {b} applied"})
            batch.update(version_after_id=version_id, delta_path=f"/var/lib/kbsync/deltas/{b:06d}.safetensors",
                         delta_sha256=sha("d", b), delta_bytes=123456, state_reason="passed")
            for row in rows:
                move(row, "applied", f"batch {b}", at, b)
                move(row, "verified", "passed", at, b)
            events.append(EVENT | {"at": at, "kind": "batch_applied", "batch_id": b, "ok": True, "details": {}})
        for row in rows:
            for kind in ("efficacy", "efficacy_acc", "paraphrase", "neighbour"):
                checks.append({"batch_id": b, "request_id": row["id"], "phase": "apply", "kind": kind,
                               "prompt": row["prompt"], "expected": row["target_new"], "rival": row["target_old"],
                               "logprob_expected": -1.0, "logprob_rival": -2.0, "passed": True, "run_id": "bench",
                               "model_version_id": version_id or None, "checked_at": at})
        batch_rows.append(batch)
        if fate == "rolled_back":
            later = at + timedelta(minutes=10)
            active.remove(b)
            version_id += 1
            versions.append({"id": version_id, "model_key": "bench", "parent_id": version_id - 1, "batch_ids": list(active),
                             "weights_sha256": sha("w", version_id), "path": None, "is_current": False,
                             "created_at": later, "reason": f"rollback of batch {b}"})
            for row in rows:
                move(row, "rolled_back", f"batch {b} rolled back", later, b)
            events.append(EVENT | {"at": later, "kind": "rollback", "batch_id": b, "ok": True, "details": {}})
        events.append(EVENT | {"at": at + timedelta(minutes=3), "kind": "tick", "batch_id": None, "ok": fate != "failed",
                               "details": {"queued": len(rows), "applied": len(rows) if fate != "failed" else 0,
                                           "failed": len(rows) if fate == "failed" else 0, "seconds": 180.0,
                                           "interrupted": False, "skipped": [],
                                           "steps": {"diff": {"ok": True, "error": "", "seconds": 40.0},
                                                     "apply": {"ok": fate != "failed", "seconds": 140.0,
                                                               "error": "" if fate != "failed" else
                                                               f"{len(rows)} edit(s) failed verification"}}}})
    versions[-1]["is_current"] = True
    while rid < requests:  # the rest of the queue: pending
        i = rid + 1
        row = request(f"Q{1000 + i}", RELATIONS[i % len(RELATIONS)], f"Entity {i}", t0 + timedelta(minutes=30 * batches), "pending")
        trans.append({"request_id": row["id"], "from_state": None, "to_state": "pending", "reason": "diff: KB disagrees",
                      "batch_id": None, "run_id": "bench", "at": row["created_at"]})
    with db.engine.begin() as conn:
        for model, rows in ((ModelVersion, versions), (Batch, batch_rows), (KbFact, facts), (EditRequestRow, reqs),
                            (RequestTransition, trans), (EditCheck, checks), (Probe, probes), (Event, events)):
            for part in chunks(rows):
                conn.execute(insert(model), part)
    db.dispose()
    return {"requests": len(reqs), "batches": len(batch_rows), "transitions": len(trans), "checks": len(checks),
            "versions": len(versions), "probes": len(probes), "events": len(events)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="SQLAlchemy URL of an empty database, e.g. sqlite:///big.db")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    counts = build(args.url, args.requests, args.batches, args.seed)
    print(f"{counts} in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
