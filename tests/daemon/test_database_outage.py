"""A running daemon loses its PostgreSQL login and gets it back: it stays up, says it is unhealthy
(health file, `kbsync status`, metrics, systemd's STATUS), skips its ticks, and goes on by itself when the database
answers, with the outage recorded and shown by `kbsync status`."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kbsync.config import load_settings
from kbsync.daemon.health import read_health
from kbsync.store.db import open_database

from .conftest import Kbsync, clean_env, free_port, migrate, stop, wait_for, write_config
from .test_daemon import events
from .test_notify import FakeSystemd

pytestmark = pytest.mark.process


@pytest.fixture
def own_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(url, role): the fresh test database, owned by a login role of its own that the test can revoke."""
    role = f"kbsync_outage_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'ALTER DATABASE "{url.database}" OWNER TO "{role}"'))
    try:
        yield url.set(username=role, password=None).render_as_string(hide_password=False), role
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def admin_sql(postgres_url: str, *statements: str) -> None:
    admin = create_engine(make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def metric(port: int, name: str) -> str:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return "\n".join(line for line in body.splitlines() if line.startswith(name))


def test_the_daemon_survives_a_database_outage_and_goes_on(tmp_path: Path, postgres_url: str,
                                                           own_role: tuple[str, str], tiny_model_dir: Path) -> None:
    url, role = own_role
    port = free_port()
    config = migrate(write_config(tmp_path / "kbsync.toml", tiny_model_dir, database_url=url, interval_s=2,
                                  steps=("diff",), metrics_port=port))
    state_dir = tmp_path / "state"
    systemd = FakeSystemd(str(tmp_path / "notify.sock"))   # systemd's NOTIFY_SOCKET: STATUS= lines
    k = Kbsync(config, clean_env() | {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    db = open_database(load_settings(config, environ={}).database_url)
    proc = k.start("daemon")
    try:
        wait_for(lambda: events(db, "tick") or proc.poll() is not None, 300, what="a first tick")
        assert proc.poll() is None, k.log[-3000:]
        assert read_health(state_dir)["healthy"] is True
        db.dispose()

        # The login is revoked and the daemon's connections cut, as a failover or a revoked grant does.
        admin_sql(postgres_url, f'ALTER ROLE "{role}" NOLOGIN',
                  f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        health = wait_for(lambda: (h := read_health(state_dir)) and not h["healthy"] and h, 120,
                          what="the daemon to say it is unhealthy")
        assert "not permitted to log in" in health["reason"] or "terminat" in health["reason"], health
        assert proc.poll() is None, k.log[-3000:]
        assert metric(port, "kbsync_healthy ") == "kbsync_healthy 0.0"
        assert 'kbsync_unhealthy{reason="' in metric(port, "kbsync_unhealthy{")
        said = [line for line in systemd.drain() if line.startswith("STATUS=UNHEALTHY since ")]
        assert any(health["reason"] in line and "next try in" in line for line in said), systemd.lines
        down = k.run("status")
        assert down.returncode == 4, down.stdout + down.stderr     # the database is out of reach ...
        assert "daemon      UNHEALTHY since" in down.stdout        # ... and status says so first
        wait_for(lambda: '"ticks_skipped"' in k.log or "database_still_unreachable" in k.log, 60, every=0.5,
                 what="a retry with back-off")

        admin_sql(postgres_url, f'ALTER ROLE "{role}" LOGIN')
        wait_for(lambda: (read_health(state_dir) or {}).get("healthy"), 360, every=0.5,
                 what="the daemon to find the database again")
        db = open_database(load_settings(config, environ={}).database_url)
        before = len(events(db, "tick"))
        wait_for(lambda: len(events(db, "tick")) > before, 60, what="a tick after the outage")
        assert proc.poll() is None, k.log[-3000:]
        assert metric(port, "kbsync_healthy ") == "kbsync_healthy 1.0"
        assert metric(port, "kbsync_database_outages_total") == "kbsync_database_outages_total 1.0"
        code = stop(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        systemd.close()
    assert code == 0, k.log[-3000:]

    [outage] = events(db, "database_outage")
    assert outage.details["seconds"] > 0 and outage.details["ticks_skipped"] >= 1, outage.details
    up = k.run("status")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "UNHEALTHY" not in up.stdout
    assert f"outage      the daemon could not reach the database from {outage.details['since']}" in up.stdout
    report = json.loads(k.run("status", "--json").stdout)
    assert report["last_database_outage"]["until"] == outage.details["until"]
    assert report["daemon_health"]["healthy"] is True
    assert [e.kind for e in events(db, "daemon_stop")] == ["daemon_stop"]   # it re-took its lock and stopped cleanly
    db.dispose()
