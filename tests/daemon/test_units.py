"""deploy/: the systemd units verify cleanly and rate OK for exposure; the example config loads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kbsync.config import load_settings

pytestmark = pytest.mark.process  # starts kbsync processes: the third test tier

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("kbsync.service", "kbsync-once.service", "kbsync.timer")
INSTALLED = "/opt/kbsync/bin/kbsync"
RATINGS = ("SAFE", "OK")  # systemd-analyze security: SAFE < OK < MEDIUM < EXPOSED < UNSAFE

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units as installed, with ExecStart pointing at this checkout's kbsync (verify checks it exists)."""
    kbsync = shutil.which("kbsync", path=str(Path(sys.executable).parent))
    if kbsync is None:
        pytest.skip("the kbsync console script is not installed in this environment")
    for name in UNITS:
        text = (DEPLOY / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(text.replace(INSTALLED, kbsync), encoding="utf-8")
    return tmp_path


@needs_systemd
def test_units_pass_systemd_analyze_verify_without_warnings(units: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(units / n) for n in UNITS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


@needs_systemd
@pytest.mark.parametrize("unit", ["kbsync.service", "kbsync-once.service"])
def test_services_rate_ok_or_better_for_exposure(units: Path, unit: str) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(units / unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert match.group(2) in RATINGS, f"{unit} rates {match.group(1)} {match.group(2)}"


def test_the_service_is_a_hardened_notify_service() -> None:
    text = (DEPLOY / "kbsync.service").read_text(encoding="utf-8")
    for line in ("Type=notify", "Restart=on-failure", "ExecStartPre=/opt/kbsync/bin/kbsync db upgrade",
                 "StateDirectory=kbsync", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "SystemCallFilter=@system-service", "UMask=0077"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^RestrictAddressFamilies=", text, re.M)
    watchdog = int(re.search(r"^WatchdogSec=(\d+)min$", text, re.M).group(1))
    stop = int(re.search(r"^TimeoutStopSec=(\d+)min$", text, re.M).group(1))
    assert stop > watchdog, "a stop must be allowed longer than a batch (which the watchdog bounds)"


def test_example_config_is_valid(tmp_path: Path) -> None:
    settings = load_settings(DEPLOY / "kbsync.example.toml", environ={})
    assert settings.kb.source == "sparql" and settings.database.url.startswith("postgresql+psycopg://")
    assert settings.metrics.bind.startswith("127.0.0.1:")
