"""The CLI skeleton: help, version, status, db upgrade, config; one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

STATUS_KEYS = {
    "kbsync_version", "database", "schema", "kb_facts", "settling", "queue", "batches",
    "current_model_version", "current_model_versions", "last_run", "last_tick", "last_successful_tick_at",
    "key_statistics", "gate", "capacity", "holds", "damage", "serving", "last_database_outage", "daemon_health",
}


def test_help_and_version(run_cli) -> None:
    r = run_cli("--help")
    assert r.exit_code == 0 and "Example:" in r.out
    r = run_cli("--version")
    assert r.exit_code == 0 and "kbsync, version" in r.out


def test_upgrade_then_status_json_is_stable(run_cli, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade").exit_code == 0
    r = run_cli("status", "--json")
    assert r.exit_code == 0, r.err
    data = json.loads(r.out)
    assert set(data) == STATUS_KEYS
    assert data["schema"]["up_to_date"] is True
    assert data["queue"] == {s: 0 for s in ["pending", "claimed", "applied", "verified", "failed", "superseded", "rolled_back"]}
    assert data["current_model_version"] is None
    assert data["settling"] == []
    assert (tmp_path / ".kbsync" / "kbsync.db").is_file()


def test_status_on_database_behind_migrations(run_cli, tmp_path: Path) -> None:
    r = run_cli("status")
    assert r.exit_code == 4
    assert r.err.strip().count("\n") == 0 and "run `kbsync db upgrade`" in r.err
    assert not (tmp_path / ".kbsync" / "kbsync.db").exists(), "a refused command must not create the database"
    run_cli("db", "upgrade")
    engine = create_engine(f"sqlite:///{tmp_path / '.kbsync' / 'kbsync.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    r = run_cli("status")
    assert r.exit_code == 4 and r.err.startswith("SchemaOutOfDateError:") and "kbsync db upgrade" in r.err


def test_malformed_config_one_line_per_problem_exit_2(run_cli, tmp_path: Path) -> None:
    (tmp_path / "kbsync.toml").write_text('[verify]\nmin_efficacy = 2\n[model]\ndevice = "tpu"\n')
    r = run_cli("status")
    assert r.exit_code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ConfigError: ") for line in lines)
    assert any("[verify.min_efficacy]" in line for line in lines)
    assert any("[model.device]" in line and "'cpu'" in line for line in lines)


def test_missing_database_directory(run_cli, tmp_path: Path) -> None:
    r = run_cli("db", "upgrade", env={"KBSYNC_DATABASE__URL": f"sqlite:///{tmp_path}/no/such/dir/k.db"})
    assert r.exit_code == 4
    assert r.err.count("\n") == 1 and "does not exist" in r.err and "[database] url" in r.err


def test_unwritable_state_directory(run_cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_cli("db", "upgrade", env={"KBSYNC_STATE__DIR": str(blocker / "state")})
    assert r.exit_code == 3
    assert r.err.startswith("StateError: state directory") and "not writable" in r.err
    r = run_cli("config", "check", env={"KBSYNC_STATE__DIR": "/proc/kbsync-state"})
    assert r.exit_code == 3 and "not writable" in r.err


def test_config_show_masks_secrets(run_cli) -> None:
    r = run_cli("config", "show", "--json", env={"KBSYNC_DATABASE__URL": "postgresql+psycopg://u:pw@h/db"})
    assert r.exit_code == 0
    data = json.loads(r.out)
    assert data["database"]["url"] == "postgresql+psycopg://u:***@h/db"


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "kbsync", "status"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 4 and p.stderr.startswith("SchemaOutOfDateError:")


def test_json_logs_carry_run_id(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "kbsync", "--log-format", "json", "db", "upgrade"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    assert lines and all("run_id" in line for line in lines)
