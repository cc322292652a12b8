"""`make demo`'s flow (scripts/demo.py) on the bundled model: after apply the changed facts are
answered with the KB's values; after rollback the rolled-back ones go back (slow: real model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kbsync.model.probe import answer_matches

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_flow(bundled, shared_stats: Path, tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    (state / "cache").mkdir(parents=True)
    (state / "cache" / "stats").symlink_to(shared_stats)  # key statistics computed once a session
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--state-dir", str(state),
         "--model", str(bundled.source_dir), "--summary", str(summary)],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo finished" in result.stdout and "v_batch_changes" in result.stdout
    assert f"sqlite3 {state.resolve()}/kbsync.db" in result.stdout.replace("\n", "")  # issue 15 #10
    assert "neighbour_acc = neighbours kept" in result.stdout.replace("\n", " ")  # each edit judged on its own checks
    data = json.loads(summary.read_text())
    rows = data["changed"]
    assert len(rows) == 5
    # issue 13: no fact the model had right before apply is wrong now unless flagged against its batch
    assert "damage: " in result.stdout and data["damage"]["unflagged"] == [], data["damage"]
    applied = [row for row in rows if row["state"] != "failed"]  # an edit that damages (e.g. one
    assert len(applied) >= 3, rows                               # glacier's continent) may be refused
    for row in rows:
        assert not answer_matches(row["before"], [row["kb"]]), row       # the model disagreed first
    for row in applied:
        assert answer_matches(row["after"], [row["kb"]]), row            # apply wrote the KB's value
        if row["state"] == "rolled_back":
            assert row["after_rollback"] == row["before"], row           # rollback restored the answer
        else:
            assert row["state"] == "verified" and answer_matches(row["after_rollback"], [row["kb"]]), row
    assert any(r["state"] == "rolled_back" for r in rows)


def test_no_loop_variable_rebinds_a_parameter_of_the_demo() -> None:
    """Issue 15 #10: a loop variable `state` once shadowed run()'s state directory, so step 6
    printed `sqlite3 verified/kbsync.db`."""
    import ast

    tree = ast.parse((ROOT / "scripts" / "demo.py").read_text())
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        params = {a.arg for a in fn.args.args}
        for loop in (n for n in ast.walk(fn) if isinstance(n, (ast.For, ast.comprehension))):
            bound = {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
            assert not bound & params, f"{fn.name}: loop variable {bound & params} rebinds a parameter"
