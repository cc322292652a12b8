"""sd_notify against a real Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from kbsync.daemon.notify import Heartbeat, Notifier, socket_address

from .conftest import migrate, run_in_process, wait_for, write_config

pytestmark = pytest.mark.process  # starts kbsync processes: the third test tier

class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: collects every datagram's KEY=value lines."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(0.05)
        self.lines: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.lines += self.sock.recv(4096).decode().splitlines()
            except (TimeoutError, BlockingIOError):
                return self.lines

    def seen(self, line: str) -> bool:
        return line in self.drain()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path):  # type: ignore[no-untyped-def]
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


def test_daemon_sends_ready_watchdog_then_stopping(tmp_path: Path, systemd: FakeSystemd) -> None:
    config = migrate(write_config(tmp_path / "kbsync.toml", tmp_path / "no-model", interval_s=1, steps=()))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}  # ping every 0.2 s

    def driver(daemon) -> None:  # type: ignore[no-untyped-def]
        wait_for(lambda: systemd.seen("WATCHDOG=1"), 10, what="a watchdog ping")

    code, _ = run_in_process(config, driver, environ=env)
    lines = systemd.drain()
    assert code == 0
    firsts = [lines.index(key) for key in ("READY=1", "WATCHDOG=1", "STOPPING=1")]
    assert firsts == sorted(firsts), lines
    assert any(line.startswith("STATUS=") for line in lines)
    assert f"MAINPID={os.getpid()}" in lines


def test_watchdog_pings_only_while_the_heartbeat_is_fresh(tmp_path: Path, systemd: FakeSystemd) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "300000"})
    heartbeat = Heartbeat()
    notifier.start_watchdog(heartbeat)
    try:
        wait_for(lambda: systemd.seen("WATCHDOG=1"), 5, what="a first ping")
        time.sleep(0.5)                      # the loop is "stuck": no beat for longer than 0.3 s
        systemd.drain()
        systemd.lines.clear()
        time.sleep(0.6)
        assert "WATCHDOG=1" not in systemd.drain(), "pinged for a stuck loop"
        heartbeat.beat()
        wait_for(lambda: systemd.seen("WATCHDOG=1"), 5, what="pings after the loop beats again")
    finally:
        notifier.close()


def test_abstract_socket_names_and_no_socket() -> None:
    name = f"@kbsync-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(name)
    try:
        assert Notifier({"NOTIFY_SOCKET": name}).send("STATUS=hello")
        assert fake.drain() == ["STATUS=hello"]
    finally:
        fake.close()
    quiet = Notifier({})
    assert not quiet.enabled and not quiet.send("READY=1")


def test_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_s == 0.0
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog_s == 1.0
