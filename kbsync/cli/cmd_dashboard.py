"""`kbsync dashboard` (the audit web UI) and `kbsync retry` (failed requests back to the queue)."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.option("--bind", default=None, help="host:port to serve on (default [dashboard] bind, 127.0.0.1:8765).")
@click.option("--allow-actions", is_flag=True,
              help="Offer roll back, re-verify and retry; each needs [dashboard] token. Without it: read-only.")
@click.pass_obj
def dashboard(app: App, bind: str | None, allow_actions: bool) -> None:
    """Serve the audit dashboard: overview, timeline, batches, facts, failures, model versions.

    Example: kbsync dashboard --bind 127.0.0.1:8765
    """
    from kbsync.dashboard.app import app_from_settings
    from kbsync.dashboard.server import serve

    db = app.database()
    state_dir = app.state_dir if allow_actions else app.settings.state.dir   # actions write model versions
    web = app_from_settings(app.settings, db, state_dir, app.run_id, allow_actions=allow_actions)
    mode = "actions enabled (token required)" if allow_actions else "read-only"
    serve(web, bind or app.settings.dashboard.bind,
          on_ready=lambda url: click.echo(f"kbsync dashboard ({mode}) on {url}/ ; Ctrl-C stops it", err=True))


@cli.command()
@click.argument("request_ids", type=int, nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failed request.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def retry(app: App, request_ids: tuple[int, ...], all_: bool, as_json: bool) -> None:
    """Put failed edit requests back in the queue (those the KB still agrees with).

    Example: kbsync retry --all
    """
    if bool(request_ids) == all_:
        raise click.UsageError("give request ids or --all (not both)")
    from kbsync.store.events import actor
    from kbsync.sync.retry import retry_failed

    report = retry_failed(app.database(), None if all_ else list(request_ids), run_id=app.run_id,
                          config_hash=app.settings.hash(), asked_by=actor())
    if as_json:
        click.echo(json.dumps({"requeued": report.requeued, "skipped": report.skipped}))
        return
    click.echo(f"re-queued {len(report.requeued)} failed requests {report.requeued}")
    for rid, why in report.skipped.items():
        click.echo(f"  request {rid} left as it is: {why}")
