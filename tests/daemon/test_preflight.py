"""`kbsync config check` finds what would fail later, without loading the model (issue 25: it
said "config OK" for each of these)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ready(run_cli, tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    kb = tmp_path / "kb.ttl"
    kb.write_text("")
    env = {"KBSYNC_MODEL__PATH": str(tiny_model_dir), "KBSYNC_KB__FILES": f'["{kb}"]'}
    assert run_cli("db", "upgrade", env=env).exit_code == 0
    return env


def test_a_ready_config_is_ok(run_cli, ready: dict[str, str]) -> None:
    r = run_cli("config", "check", env=ready)
    assert r.exit_code == 0 and r.out.startswith("config OK"), r.err


@pytest.mark.parametrize(("key", "value", "says", "code"), [
    ("KBSYNC_DASHBOARD__ALLOW_ACTIONS", "true", "token of at least 16 characters", 2),   # no token at all
    ("KBSYNC_DASHBOARD__TOKEN", "short", "token of at least 16 characters", 2),
    ("KBSYNC_SCHEDULE__TIMEZONE", "Mars/Olympus", "[schedule] timezone 'Mars/Olympus' is not an IANA time zone", 2),
    ("KBSYNC_SCHEDULE__CRON", "61 3 * * *", "[schedule] cron '61 3 * * *' is not a valid crontab", 2),
    ("KBSYNC_MODEL__PATH", "/nowhere/model", "[model] path: /nowhere/model does not exist", 2),
    ("KBSYNC_MODEL__PATH", "/nowhere/model.gguf", "the GGUF file /nowhere/model.gguf does not exist", 2),
    ("KBSYNC_MODEL__PATH", "builtin:gpt-17", "unknown builtin model 'gpt-17'", 6),
    ("KBSYNC_KB__FILES", '["/nowhere/kb.ttl"]', "[kb] files: /nowhere/kb.ttl does not exist", 2),
    ("KBSYNC_RELATIONS__ENABLED", '["P36", "P99999"]', "unknown relation id(s) P99999", 2),
    ("KBSYNC_KB__SOURCE", "wikidata", "which www.wikidata.org requires; set [kb] user_agent", 2),   # issue 28
    ("KBSYNC_EDITING__CORPUS", "/nowhere/corpus.txt", "[editing] corpus: /nowhere/corpus.txt is not a file", 2),
])
def test_each_problem_is_one_line_naming_the_key(run_cli, ready: dict[str, str], key: str, value: str, says: str,
                                                 code: int) -> None:
    r = run_cli("config", "check", env=ready | {key: value})
    assert r.exit_code == code and "config OK" not in r.out, (r.exit_code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.err


def test_every_problem_is_listed_at_once(run_cli, ready: dict[str, str]) -> None:
    r = run_cli("config", "check", env=ready | {"KBSYNC_SCHEDULE__TIMEZONE": "Mars/Olympus",
                                                "KBSYNC_KB__FILES": '["/nowhere/kb.ttl"]',
                                                "KBSYNC_DASHBOARD__TOKEN": "short"})
    assert r.exit_code == 2 and len(r.err.strip().splitlines()) == 3, r.err


def test_a_database_behind_its_migrations_is_a_problem(run_cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    kb = tmp_path / "kb.ttl"
    kb.write_text("")
    r = run_cli("config", "check", env={"KBSYNC_MODEL__PATH": str(tiny_model_dir), "KBSYNC_KB__FILES": f'["{kb}"]'})
    assert r.exit_code == 4 and "kbsync db upgrade" in r.err, r.err
