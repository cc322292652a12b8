"""`kbsync dashboard`: the audit web UI (read-only, or with token-guarded actions)."""

from __future__ import annotations

import click

from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.option("--bind", default=None,
              help="host:port to serve on (default [dashboard] bind, 127.0.0.1:8765); no host (:8765) is 127.0.0.1.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --bind that other machines can reach (e.g. 0.0.0.0:8765); refused without it.")
@click.option("--allow-actions", is_flag=True,
              help="Offer roll back, re-verify and retry; each needs [dashboard] token. Without it: read-only.")
@click.pass_obj
def dashboard(app: App, bind: str | None, allow_remote: bool, allow_actions: bool) -> None:
    """Serve the audit dashboard: overview, timeline, batches, facts, failures, model versions.

    Example: kbsync dashboard --bind 127.0.0.1:8765
    """
    from kbsync.dashboard.app import app_from_settings
    from kbsync.dashboard.server import remote_warning, serve

    app.read_only = not allow_actions   # read-only: a mounted backup serves, and no -wal/-shm is made
    db = app.database()
    state_dir = app.state_dir if allow_actions else app.settings.state.dir   # actions write model versions
    web = app_from_settings(app.settings, db, state_dir, app.run_id, allow_actions=allow_actions)
    mode = "actions enabled (token required)" if allow_actions else "read-only"

    def ready(url: str) -> None:
        if warning := remote_warning(url):
            click.echo(warning, err=True)
        click.echo(f"kbsync dashboard ({mode}) on {url}/ ; Ctrl-C stops it", err=True)

    serve(web, bind or app.settings.dashboard.bind, on_ready=ready,
          allow_remote=allow_remote or app.settings.dashboard.allow_remote)
