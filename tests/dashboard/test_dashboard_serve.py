"""`kbsync dashboard` and `[dashboard] enabled` in the daemon, as real processes."""

from __future__ import annotations

import ipaddress
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


def listening(port: int) -> set[str]:
    """The local addresses listening on TCP `port` (/proc/net/tcp and tcp6, as `ss -ltn` reads them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:    # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)   # each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def dashboard_process(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kbsync", "dashboard", *args], env=environment(tmp_path),
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_bind_without_a_host_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    proc = dashboard_process(tmp_path, "--bind", f":{port}")
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", proc)
        assert listening(port) == {"127.0.0.1"}
    finally:
        stop(proc)
    err = proc.stderr.read() if proc.stderr else ""
    assert f"on http://127.0.0.1:{port}/" in err and "warning" not in err


def test_a_remote_bind_needs_allow_remote_and_warns(tmp_path: Path) -> None:
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "kbsync", "dashboard", "--bind", f"0.0.0.0:{port}"],
                         env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "ConfigError: dashboard bind 0.0.0.0" in out.stderr and "--allow-remote" in out.stderr
    proc = dashboard_process(tmp_path, "--bind", f"0.0.0.0:{port}", "--allow-remote")
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", proc)
        assert listening(port) == {"0.0.0.0"}
    finally:
        stop(proc)
    err = proc.stderr.read() if proc.stderr else ""
    assert "warning: the dashboard listens on 0.0.0.0, reachable from other machines" in err
    assert f"on http://0.0.0.0:{port}/" in err          # the real address, not 127.0.0.1
