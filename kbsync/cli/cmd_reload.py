"""`kbsync reload`: tell the serving engine to load the current version ([serve] reload)."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.errors import ConfigError, ServingError
from kbsync.runtime import App


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the reload's row as JSON.")
@click.pass_obj
def reload(app: App, as_json: bool) -> None:
    """Reload the serving engine on the current version now (a failed reload, or a restarted engine).

    apply, rollback, compact and the daemon reload it by themselves when the current version
    changes ([serve] reload); this does it again, exports it if needed, and probes the served
    model on the version's verified edits ([probe] endpoint).

    Example: kbsync reload
    """
    from kbsync.cli.reloading import outcome_line
    from kbsync.serving.reload import reload_served
    from kbsync.sync.from_settings import configured_model_key

    if app.settings.serve.reload == "none":
        raise ConfigError("[serve] reload = none: set it to command or vllm (docs/serving.md)")
    row = reload_served(app.settings, app.database(), app.state_dir, configured_model_key(app.settings, app.state_dir),
                        action="retry", run_id=app.run_id)
    assert row is not None
    if as_json:
        click.echo(json.dumps({c: getattr(row, c) for c in ("id", "model_version_id", "action", "how", "export", "path",
                                                           "state", "attempts", "detail", "probed", "agreed")}))
    else:
        click.echo(outcome_line(row))
    if row.state != "ok":
        raise ServingError(row.detail)
