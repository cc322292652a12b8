"""diff → apply (two batches) → verified in SQL → rollback of the second batch → weights
hash-identical to after the first → the first batch's edits still verified.

On the bundled model with the demo KB, on SQLite and on PostgreSQL (slow: real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

DEMO = Path(__file__).resolve().parents[2] / "kbsync" / "data" / "demo.ttl"


def bundled_env(bundled, root: Path, db_url: str, shared_stats: Path) -> dict[str, str]:
    (root / "state" / "cache").mkdir(parents=True, exist_ok=True)
    link = root / "state" / "cache" / "stats"
    if not link.exists():
        link.symlink_to(shared_stats)
    return {
        "KBSYNC_MODEL__PATH": str(bundled.source_dir),
        "KBSYNC_STATE__DIR": str(root / "state"),
        "KBSYNC_DATABASE__URL": db_url,
        "KBSYNC_KB__FILES": json.dumps([str(DEMO)]),
        "KBSYNC_EDITING__CORPUS": "builtin:smollm2-samples",
        "KBSYNC_EDITING__COV_SAMPLES": "512",
    }


@pytest.mark.slow
def test_diff_apply_rollback_end_to_end(run_cli, bundled, db_url: str, tmp_path: Path, shared_stats: Path) -> None:
    env = bundled_env(bundled, tmp_path, db_url, shared_stats)
    assert run_cli("db", "upgrade", env=env).exit_code == 0
    diff = json.loads(run_cli("diff", "--json", env=env).out)
    assert diff["queued"] == 5

    r = run_cli("apply", "--batch-size", "3", "--json", env=env)
    assert r.exit_code == 0, r.err[-3000:]
    report = json.loads(r.out)
    verified = [b for b in report["batches"] if b["state"] == "verified"]
    assert len(verified) >= 2, report
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, state, batch_id FROM edit_requests")).all()
        applied = [r for r in rows if r.state in ("applied", "verified")]
        assert applied and all(r.state == "verified" for r in applied)
        efficacy = conn.execute(text(
            "SELECT request_id, passed FROM edit_checks WHERE kind = 'efficacy' AND phase = 'apply'")).all()
        assert {r.id for r in applied} <= {c.request_id for c in efficacy}
        versions = conn.execute(text("SELECT id, batch_ids, weights_sha256 FROM model_versions ORDER BY id")).all()
    first, second = verified[0]["batch_id"], verified[-1]["batch_id"]
    def ids(value: object) -> object:  # JSON columns: text on SQLite, decoded on PostgreSQL
        return json.loads(value) if isinstance(value, str) else value

    # the version just before the last batch (a batch the gate refused may have been retried in parts)
    before_last = [b["batch_id"] for b in verified[:-1]]
    after_first = next(v for v in versions if ids(v.batch_ids) == before_last)

    def edit_states(batch: int) -> dict[int, str]:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT id, state FROM edit_requests WHERE batch_id = :b"), {"b": batch}).all())

    first_before = edit_states(first)  # per edit: verified, or failed (dropped from the batch and re-solved)
    assert "verified" in first_before.values()
    r = run_cli("rollback", str(second), "--json", env=env)
    assert r.exit_code == 0, r.err[-3000:]
    result = json.loads(r.out)
    assert result["weights_after"] == after_first.weights_sha256
    assert result["restores_version"] == after_first.id
    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT id, state FROM batches")).all())
        assert states[second] == "rolled_back"
        second_edits = conn.execute(text("SELECT state FROM edit_requests WHERE batch_id = :b"), {"b": second}).all()
        assert all(s.state == "rolled_back" for s in second_edits)
        event = conn.execute(text("SELECT details FROM events WHERE kind = 'rollback'")).scalar_one()
    details = event if isinstance(event, dict) else json.loads(event)
    assert edit_states(first) == first_before  # the earlier batch's edits keep their own verdicts
    assert details["weights_after"] == after_first.weights_sha256
    engine.dispose()
    status = json.loads(run_cli("status", "--json", env=env).out)
    assert status["current_model_version"]["batch_ids"] == before_last
