"""Small wrong answers a new operator met (issue 25), each through the CLI on the tiny model."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from test_cli_tiny import env  # noqa: F401  tests/sync is on sys.path (no __init__.py): the fixture

pytestmark = pytest.mark.usefixtures("env")


@pytest.fixture
def applied(run_cli, env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    r = run_cli("apply", "--batch-size", "2", env=env)
    assert r.exit_code == 0, r.err
    return env


def test_status_gate_lines_have_a_space_after_their_name(run_cli, applied: dict[str, str]) -> None:
    out = run_cli("status", env=applied).out
    gate = [line for line in out.splitlines() if line.startswith("gate ")]
    assert any(line.startswith("gate current perplexity ") for line in gate), gate   # was "gate currentperplexity"
    assert any(line.startswith("gate base   perplexity ") for line in gate), gate


def test_a_usage_error_ends_its_sentence_once(run_cli, env: dict[str, str]) -> None:  # noqa: F811
    r = run_cli("retry", "abc", env=env)
    assert r.exit_code == 2 and "integer; see `kbsync retry --help`" in r.err and ".; see" not in r.err, r.err


def test_audit_and_retry_of_what_does_not_exist_exit_8(run_cli, env: dict[str, str]) -> None:  # noqa: F811
    r = run_cli("audit", "--batch", "999", env=env)
    assert (r.exit_code, r.err.split(":")[0]) == (8, "SelectionError"), r.err
    r = run_cli("retry", "999", env=env)
    assert r.exit_code == 8 and "request 999: no such request" in r.err, (r.exit_code, r.err)
    r = run_cli("retry", "--damage", "999", env=env)
    assert r.exit_code == 8 and "there is no batch 999" in r.err
    r = run_cli("retry", "--all", env=env)          # nothing failed: nothing named, nothing wrong
    assert r.exit_code == 0 and "re-queued 0 failed requests" in r.out


def test_export_names_the_version_status_shows_and_follows_the_umask(run_cli, applied: dict[str, str],
                                                                     tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        r = run_cli("export", str(tmp_path / "serve" / "kb"), env=applied)
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.err
    status = run_cli("status", "--json", env=applied).out
    current = json.loads(status)["current_model_version"]["id"]
    assert f"exported model version {current} (current) (directory " in r.out, r.out   # not "version current"
    out = tmp_path / "serve" / "kb"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}   # a serving user can read them
    missing = run_cli("export", str(tmp_path / "other"), "--version", "99", env=applied)
    assert missing.exit_code == 8 and "its versions: " in missing.err and f"{current} (current)" in missing.err
    assert "kbsync status" not in missing.err          # status does not list versions


def test_the_overview_says_one_batch_not_one_batches() -> None:
    from jinja2 import Environment, FileSystemLoader

    import kbsync.dashboard as dashboard

    folder = Path(dashboard.__file__).parent / "templates"
    source = (folder / "overview.html").read_text()
    line = next(x for x in source.splitlines() if "active</p>" in x)
    snippet = line[line.index("{{ view.current.batch_ids"):line.index("active") + len("active")]
    render = Environment(loader=FileSystemLoader(str(folder))).from_string(snippet).render
    assert render(view={"current": {"batch_ids": [4]}}) == "1 batch active"
    assert render(view={"current": {"batch_ids": [4, 5]}}) == "2 batches active"


def test_apply_says_which_step_a_batch_is_in_and_which_facts_each_batch_holds(run_cli, env: dict[str, str]) -> None:  # noqa: F811
    r = run_cli("apply", "--batch-size", "2", env=env)
    assert r.exit_code == 0, r.err
    lines = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    said = [(e["batch"], e.get("phase", e["event"])) for e in lines if e["event"] in ("batch_phase", "batch_verified")]
    for batch in {b for b, _ in said}:   # between batch_started and batch_verified: each step as it begins
        assert [p for b, p in said if b == batch] == ["targets", "solve", "checks", "gate", "publish",
                                                      "batch_verified"], said
    header = [line.split("┃") for line in r.out.splitlines() if line.startswith("┃")]   # a name may wrap
    names = [" ".join(part[i].strip() for part in header).strip() for i in range(len(header[0]))]
    column = names.index("facts it holds")   # found by name: columns get added
    held: list[str] = []   # the column "facts it holds" of each batch, its folded lines joined
    for line in (x.split("│") for x in r.out.splitlines() if x.startswith("│ ")):
        if line[1].strip():
            held.append("")
        held[-1] = " ".join((held[-1] + " " + line[column].strip()).split())
    assert len(held) == 2 and all(re.fullmatch(r"Q\d+ P36(, Q\d+ P36)*", h) for h in held), held
    assert sum(len(h.split(", ")) for h in held) == 3
