"""`python -m kbsync daemon` as a real subprocess: ticks on schedule, applies edits, stops cleanly,
and refuses to run twice on one database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.config import load_settings
from kbsync.daemon.loop import Daemon, daemon_lock
from kbsync.errors import LockedError
from kbsync.runtime import App
from kbsync.store.db import open_database, upgrade
from kbsync.store.models import Batch, EditRequestRow, Event, ModelVersion
from kbsync.store.states import BatchState, RequestState
from kbsync.store.status import status

from .conftest import (
    Kbsync,
    clean_env,
    migrate,
    stop,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.process  # starts kbsync processes: the third test tier

def events(db, kind: str) -> list[Event]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rows = list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        s.expunge_all()
    return rows


def log_events(k: Kbsync, name: str) -> list[dict]:
    out = []
    for line in k.log.splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            out.append(json.loads(line))
    return out


def test_daemon_ticks_applies_and_finishes_the_batch_on_sigterm(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = migrate(write_config(tmp_path / "kbsync.toml", tiny_model_dir, interval_s=3, steps=("diff", "apply"),
                                  batch_size=2, max_edits_per_tick=2))
    k = Kbsync(config, clean_env())
    db = open_database(load_settings(config, environ={}).database_url)
    proc = k.start("daemon")
    try:
        wait_for(lambda: len(events(db, "tick")) >= 2 or proc.poll() is not None, 300, every=0.5, what="two ticks")
        assert proc.poll() is None, k.log[-3000:]
        started = len(log_events(k, "batch_started"))
        wait_for(lambda: len(log_events(k, "batch_started")) > started, 120, every=0.05, what="a third batch")
        code = stop(proc, timeout=120)          # SIGTERM while the third tick's batch runs
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, k.log[-3000:]
    assert log_events(k, "stop_requested")

    with db.session() as s:
        batches = list(s.scalars(select(Batch).order_by(Batch.id)))
        requests = list(s.scalars(select(EditRequestRow)))
        versions = {v.id: v for v in s.scalars(select(ModelVersion))}
        # Never half applied: no batch running, no request claimed; each batch in or out as a whole.
        assert [b.id for b in batches if b.state == BatchState.RUNNING.value] == []
        assert [r.id for r in requests if r.state == RequestState.CLAIMED.value] == []
        for b in batches:
            members = [r for r in requests if r.batch_id == b.id]
            if b.state == BatchState.VERIFIED.value:
                assert b.delta_sha256 and Path(b.delta_path).is_file()
                assert b.version_after_id in versions
                assert all(r.state == RequestState.VERIFIED.value for r in members)
            else:
                assert b.state == BatchState.FAILED.value
                assert all(r.state in (RequestState.PENDING.value, RequestState.FAILED.value) for r in members)
        verified = [b for b in batches if b.state == BatchState.VERIFIED.value]
        assert len(verified) >= 3, [(b.id, b.state) for b in batches]   # the one SIGTERM met was finished
        current = [v for v in versions.values() if v.is_current]
        assert len(current) == 1 and current[0].batch_ids == [b.id for b in verified]

    ticks = events(db, "tick")
    assert len(ticks) >= 3 and all(t.ok for t in ticks), [t.details for t in ticks]
    assert sum(t.details["applied"] for t in ticks) == sum(b.n_edits for b in verified)
    assert ticks[0].details["read"] == 6 and ticks[0].details["queued"] == 6   # the tiny model knows nothing
    assert all(t.details["queued"] == 0 for t in ticks[1:])                    # queued once, not again
    report = status(db)
    assert report["last_tick"]["kind"] == "tick" and report["last_tick"]["ok"] is True
    assert report["last_successful_tick_at"] == ticks[-1].at.isoformat()
    assert [e.kind for e in events(db, "daemon_stop")] == ["daemon_stop"]
    db.dispose()


def test_a_second_daemon_on_the_same_database_exits_non_zero(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path / "kbsync.toml", tmp_path / "no-model", database_url=db_url)
    settings = load_settings(config, environ={})
    settings.state.dir.mkdir(parents=True)
    upgrade(db_url)
    db = open_database(db_url)
    try:
        with daemon_lock(db, settings.state.dir):        # the first daemon's lock, held by this test
            second = Kbsync(config, clean_env()).run("daemon", timeout=180)
            with pytest.raises(LockedError, match="another kbsync daemon or run-once already runs"):
                Daemon(App(settings=settings, run_id="once"), lambda: settings).run(once=True)
    finally:
        db.dispose()
    assert second.returncode == 4, second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        "LockedError: another kbsync daemon or run-once already runs on this database; stop it first "
        "(systemctl stop kbsync) or point this one at another [database] url")


def test_run_once_returns_the_failing_steps_code(tmp_path: Path) -> None:
    """A model that cannot load fails the tick: exit 6 (ModelError), recorded as a failed tick."""
    config = migrate(write_config(tmp_path / "kbsync.toml", tmp_path / "missing-model", steps=("apply",)))
    settings = load_settings(config, environ={})
    app = App(settings=settings, run_id="once")
    try:
        assert Daemon(app, lambda: settings).run(once=True) == 6
        tick = events(app.database(), "tick")[-1]
    finally:
        app.close()
    assert tick.ok is False and tick.details["steps"]["apply"]["error"].startswith("ModelError:")


def test_cli_help_documents_both_commands(run_cli) -> None:  # type: ignore[no-untyped-def]
    for command in ("daemon", "run-once"):
        result = run_cli(command, "--help")
        assert result.exit_code == 0 and "Example: kbsync" in result.out, result.err


def test_the_follow_step_runs_in_a_tick(tmp_path: Path) -> None:
    """[schedule] steps = ["follow"] (issue 28) runs the change-stream follower; on an RDF source it
    fails the tick in one line naming the fix (exit 2), before anything is read or loaded."""
    config = migrate(write_config(tmp_path / "kbsync.toml", tmp_path / "missing-model", steps=("follow",)))
    settings = load_settings(config, environ={})
    app = App(settings=settings, run_id="once")
    try:
        assert Daemon(app, lambda: settings).run(once=True) == 2
        tick = events(app.database(), "tick")[-1]
    finally:
        app.close()
    assert tick.details["steps"]["follow"]["error"].startswith(
        "ConfigError: kbsync follow follows Wikidata's change stream: set [kb] source = \"wikidata\"")
