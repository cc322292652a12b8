"""`kbsync dashboard` and `[dashboard] enabled` in the daemon, as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kbsync.store import db as store_db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'kbsync.db'}"
    store_db.upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    return env | {"KBSYNC_DATABASE__URL": url, "KBSYNC_STATE__DIR": str(tmp_path / "state"),
                  "KBSYNC_LOGGING__FORMAT": "json"} | extra


def wait_for_page(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_dashboard_command_serves_and_stops(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kbsync", "dashboard", "--bind", f"127.0.0.1:{port}"],
                            env=environment(tmp_path), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        page = wait_for_page(f"http://127.0.0.1:{port}/", proc)
        assert "Overview" in page and "read-only" in page and "nothing applied yet" in page
    finally:
        stop(proc)


def test_actions_without_a_token_refuse_to_start(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "kbsync", "dashboard", "--allow-actions", "--bind", "127.0.0.1:0"],
                         env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("ConfigError: dashboard actions need a token")


def test_daemon_serves_the_dashboard_when_enabled(tmp_path: Path) -> None:
    port = free_port()
    env = environment(tmp_path, KBSYNC_DASHBOARD__ENABLED="true", KBSYNC_DASHBOARD__BIND=f"127.0.0.1:{port}",
                      KBSYNC_SCHEDULE__CRON="0 0 1 1 *")   # no tick while the test runs
    proc = subprocess.Popen([sys.executable, "-m", "kbsync", "daemon"], env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert "Overview" in wait_for_page(f"http://127.0.0.1:{port}/", proc)
    finally:
        assert stop(proc) == 0
