"""`kbsync diff` end to end on the bundled model and the demo KB (slow: real model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

DEMO = Path(__file__).resolve().parents[2] / "kbsync" / "data" / "demo.ttl"


def changed_in(ttl: str) -> set[str]:
    """Subjects (ids) whose value the demo KB changed: they carry a '-new' preferred statement."""
    return {m.group(1) for m in re.finditer(r"wds:(Q\d+)-P\d+-new a", ttl)}


@pytest.fixture
def env(bundled, tmp_path: Path) -> dict[str, str]:
    return {
        "KBSYNC_MODEL__PATH": str(bundled.source_dir),   # the de-quantised cache, shared by the session
        "KBSYNC_STATE__DIR": str(tmp_path / "state"),
        "KBSYNC_KB__FILES": json.dumps([str(DEMO)]),
        "KBSYNC_PROBE__SAMPLE_UNCHANGED": "100",
    }


@pytest.mark.slow
def test_diff_queues_exactly_the_changed_facts_once_and_supersedes(run_cli, env, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade", env=env).exit_code == 0
    first = run_cli("diff", "--json", env=env)
    assert first.exit_code == 0, first.err
    report = json.loads(first.out)
    ttl = DEMO.read_text()
    queued = {row["subject"] for row in report["rows"] if row["action"] == "queued"}
    assert queued == changed_in(ttl)
    assert report["read"] == report["probed"] == report["new"] and report["agree"] == report["read"] - len(queued)

    again = json.loads(run_cli("diff", "--json", env=env).out)
    assert again["new"] == again["changed"] == 0 and again["queued"] == 0
    assert {row["action"] for row in again["rows"]} <= {"agrees", "already_queued"}

    # The KB changes one value again: its pending request is superseded by a new one.
    subject = sorted(changed_in(ttl))[0]
    match = re.search(rf"wds:{subject}-(P\d+)-new a wikibase:Statement ;\n    ps:P\d+ wd:(Q\d+)", ttl)
    assert match
    relation, new_obj = match.groups()
    other = "Q900000582"  # Italy: any other labelled entity of the KB
    assert f"wd:{other} a wikibase:Item" in ttl
    # The statement is what kbsync reads (statements mode); the wdt: triple is kept consistent.
    edited = ttl.replace(match.group(0), match.group(0).replace(f"wd:{new_obj}", f"wd:{other}"), 1)
    edited = edited.replace(f"wdt:{relation} wd:{new_obj}", f"wdt:{relation} wd:{other}", 1)
    kb = tmp_path / "kb.ttl"
    kb.write_text(edited)
    third = run_cli("diff", "--json", env=env | {"KBSYNC_KB__FILES": json.dumps([str(kb)])})
    assert third.exit_code == 0, third.err
    rows = json.loads(third.out)["rows"]
    assert [r["action"] for r in rows if r["subject"] == subject] == ["superseded"]
    db = create_engine(f"sqlite:///{tmp_path / 'state' / 'kbsync.db'}")
    with db.connect() as conn:
        states = conn.execute(text("SELECT state, superseded_by FROM edit_requests WHERE subject = :s ORDER BY id"),
                              {"s": subject}).all()
    assert [s for s, _ in states] == ["superseded", "pending"] and states[0][1] is not None


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(run_cli, env, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade", env=env).exit_code == 0
    r = run_cli("diff", "--relation", "P99999", env=env)
    assert r.exit_code == 5 and r.err.startswith("CatalogueError:") and r.err.count("\n") == 1
    r = run_cli("--log-level", "warning", "diff", env=env | {"KBSYNC_KB__FILES": json.dumps([str(tmp_path / "missing.ttl")])})
    assert r.exit_code == 5 and "missing.ttl" in r.err and r.err.count("\n") == 1
    bad = tmp_path / "bad.ttl"
    bad.write_text(DEMO.read_text().replace('rdfs:label "Italy"@en', 'rdfs:label " "@en'))
    r = run_cli("--log-level", "warning", "diff", env=env | {"KBSYNC_KB__FILES": json.dumps([str(bad)])})
    assert r.exit_code == 6 and r.err.startswith("TokenizationError:") and "tokenises to nothing" in r.err
    status = json.loads(run_cli("status", "--json", env=env).out)
    assert status["kb_facts"] == 0 and sum(status["queue"].values()) == 0
