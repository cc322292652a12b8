"""Wrong or silent answers (issue 15 #5): each gets a true answer or a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbsync.config import load_settings
from kbsync.errors import ConfigError
from kbsync.store import db as store_db
from kbsync.store.events import record_event


@pytest.fixture
def upgraded(run_cli) -> None:
    assert run_cli("db", "upgrade").exit_code == 0


def test_audit_of_a_batch_that_does_not_exist(run_cli, upgraded) -> None:
    r = run_cli("audit", "--batch", "99")
    # README: 8 for a batch or version named on the command line that does not exist (issue 25: it was 2)
    assert r.exit_code == 8 and r.err.startswith("SelectionError: there is no batch 99") and not r.out.strip()
    r = run_cli("audit", "--failed")
    assert r.exit_code == 0 and r.out.strip() == "failed edits and why: no rows"


def test_subcommand_help_with_a_broken_config_file(run_cli, tmp_path: Path) -> None:
    (tmp_path / "kbsync.toml").write_text("[editing\n")
    for args in (("diff", "--help"), ("db", "upgrade", "-h")):
        r = run_cli(*args)
        assert r.exit_code == 0 and "Example:" in r.out, r.err
    assert run_cli("status").exit_code == 2  # without --help the broken file is still an error


def test_a_failed_diff_is_the_last_run(run_cli, upgraded, tmp_path: Path) -> None:
    db = store_db.open_database(f"sqlite:///{tmp_path / '.kbsync' / 'kbsync.db'}")
    with db.session() as s:
        record_event(s, "diff", run_id="earlier")
    db.dispose()
    r = run_cli("diff", env={"KBSYNC_KB__FILES": json.dumps([str(tmp_path / "missing.ttl")])})
    assert r.exit_code == 5
    last = json.loads(run_cli("status", "--json").out)["last_run"]
    assert last["kind"] == "diff" and last["ok"] is False and last["run_id"] != "earlier"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_infinite_settings_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[kb.timeout_s\]"):
        load_settings(environ={"KBSYNC_KB__TIMEOUT_S": value})


def test_env_values_of_text_settings_are_taken_as_written() -> None:
    s = load_settings(environ={"KBSYNC_STATE__DIR": "2024", "KBSYNC_KB__LANGUAGE": "true",
                               "KBSYNC_DATABASE__URL": "1e3", "KBSYNC_EDITING__BATCH_SIZE": "7",
                               "KBSYNC_KB__SUBJECTS": '["Q1"]'})
    assert s.state.dir == Path("2024") and s.kb.language == "true" and s.database.url == "1e3"
    assert s.editing.batch_size == 7 and s.kb.subjects == ["Q1"]
