"""`kbsync diff --dry-run` says what the queue would do (issue 25): a fact already pending is
`already_queued`, not `would_queue`, and the totals count what would be queued."""

from __future__ import annotations

from test_holds_flow import diff, flow  # tests/sync is on sys.path (no __init__.py)


def test_dry_run_rows_and_totals_agree_with_the_queue(make_settings, tmp_path, sqlite_url) -> None:
    settings, db, _ = flow(make_settings, tmp_path, sqlite_url, "Poseidonia")
    first = diff(settings, db, "d0", dry_run=True)
    assert [r.action for r in first.rows] == ["would_queue"] and first.queued == 1   # not "0 queued"
    assert diff(settings, db, "d1").queued == 1
    again = diff(settings, db, "d2", dry_run=True)
    (row,) = again.rows
    assert row.action == "already_queued" and row.request_id is not None and again.queued == 0
    db.dispose()


def test_the_cli_summary_says_would_be_queued(make_settings, tmp_path, sqlite_url, run_cli) -> None:
    settings, db, kb = flow(make_settings, tmp_path, sqlite_url, "Poseidonia")
    db.dispose()
    env = {"KBSYNC_DATABASE__URL": sqlite_url, "KBSYNC_STATE__DIR": str(settings.state.dir),
           "KBSYNC_MODEL__PATH": str(settings.model.path), "KBSYNC_KB__SOURCE": "rdf", "KBSYNC_KB__MODE": "truthy",
           "KBSYNC_KB__FILES": f'["{kb}"]', "KBSYNC_RELATIONS__ENABLED": '["P36"]',
           "KBSYNC_PROBE__MAX_NEW_TOKENS": "3"}
    r = run_cli("diff", "--full", "--dry-run", env=env)
    assert r.exit_code == 0, r.err
    assert "1 would be queued" in r.out and "would_queue" in r.out
