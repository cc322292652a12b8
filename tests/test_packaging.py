"""A non-editable install (a built wheel) still finds the Alembic migrations and the catalogue."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from kbsync.store.db import head_revision

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_migrations_and_runs_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("kbsync-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "kbsync/migrations/env.py" in names
    assert any(n.startswith("kbsync/migrations/versions/0001") for n in names)
    assert "kbsync/dashboard/templates/timeline.html" in names and "kbsync/dashboard/static/style.css" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import kbsync.store.db as d, sys; p = d.migrations_dir(); "
        "assert str(p).startswith(sys.argv[1]), p; "
        "print(d.upgrade('sqlite:///' + sys.argv[1] + '/k.db'))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code, str(site)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"(None, {head_revision()!r})"  # every shipped migration ran
