"""On the bundled model, with the shipped catalogue, over Wikidata-shaped statements with end
times (leaders.ttl, as of 2025-06-01): diff queues only current values, with the ended ones
as the stale answers, and after apply the greedy answers name the new values (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_apply_e2e import bundled_env  # tests/sync is on sys.path (no __init__.py)

from kbsync.model.probe import answer_matches

LEADERS = Path(__file__).resolve().parents[1] / "data" / "leaders.ttl"
CURRENT = {  # (subject, relation) -> the value current on 2025-06-01, and the ones that ended
    ("Q91000001", "P6"): ("Keir Starmer", {"Rishi Sunak", "Liz Truss", "Boris Johnson"}),
    ("Q91000002", "P169"): ("Tim Cook", {"Steve Jobs", "Michael Spindler", "John Sculley"}),
    ("Q91000003", "P169"): ("Satya Nadella", {"Steve Ballmer"}),
    ("Q91000006", "P6"): ("Friedrich Merz", {"Olaf Scholz", "Angela Merkel"}),
    ("Q91000004", "P54"): ("Al Nassr", {"Manchester United", "Juventus", "Real Madrid"}),
}


@pytest.mark.slow
def test_diff_queues_current_values_and_apply_makes_the_model_say_them(
    run_cli, bundled, sqlite_url: str, tmp_path: Path, shared_stats: Path
) -> None:
    env = bundled_env(bundled, tmp_path, sqlite_url, shared_stats)
    env |= {
        "KBSYNC_KB__FILES": json.dumps([str(LEADERS)]),
        "KBSYNC_KB__SUBJECTS": json.dumps(sorted({s for s, _ in CURRENT})),
        "KBSYNC_RELATIONS__ENABLED": json.dumps(sorted({r for _, r in CURRENT})),
        "KBSYNC_KB__AS_OF": "2025-06-01",
    }
    assert run_cli("db", "upgrade", env=env).exit_code == 0
    diff = json.loads(run_cli("diff", "--json", env=env).out)
    assert diff["read"] == len(CURRENT)
    queued = {(r["subject"], r["relation"]): r for r in diff["rows"] if r["action"] == "queued"}
    assert queued, "the bundled model knows every current value already?"
    for key, row in queued.items():
        value, ended = CURRENT[key]
        assert row["kb_answer"] == value  # only current values are targets

    r = run_cli("apply", "--json", env=env)
    assert r.exit_code == 0, r.err[-3000:]
    history = {key: json.loads(run_cli("audit", "--subject", key[0], "--relation", key[1], "--json", env=env).out)
               for key in queued}
    verified = [key for key, rows in history.items() if rows and rows[-1]["to_state"] == "verified"]
    assert verified, history
    for key in queued:  # the stale answer an edit replaces is the KB's most recently ended value
        assert history[key][0]["target_old_source"] == "kb"
        assert history[key][0]["target_old"] in CURRENT[key][1]

    after = json.loads(run_cli("diff", "--full", "--dry-run", "--json", env=env).out)
    answers = {(row["subject"], row["relation"]): row["model_answer"] for row in after["rows"]}
    for key in verified:
        assert answer_matches(answers[key], [CURRENT[key][0]]), (key, answers[key])
