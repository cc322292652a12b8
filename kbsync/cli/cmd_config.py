"""`kbsync config ...`: show and check the effective configuration."""

from __future__ import annotations

import json
import sys

import click

from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.group()
def config() -> None:
    """The effective configuration (file → KBSYNC_<SECTION>__<KEY> → flags).

    Example: kbsync config show
    """


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
@click.pass_obj
def show(app: App, as_json: bool) -> None:
    """Print every setting's effective value, secrets masked.

    Example: KBSYNC_EDITING__BATCH_SIZE=20 kbsync config show
    """
    data = app.settings.masked()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"# from {app.settings.source_file or 'built-in defaults'}")
    for section, values in data.items():
        click.echo(f"\n[{section}]")
        for key, value in values.items():
            click.echo(f"{key} = {json.dumps(value)}")


@config.command()
@click.pass_obj
def check(app: App) -> None:
    """Check everything the configuration names that can be checked without loading the model.

    The state directory, the model path, the KB files, the relation ids, corpus files, the
    schedule's time zone and cron expression, the dashboard token, the database and its schema:
    one line per problem, and the exit code of the first.

    Example: kbsync --config /etc/kbsync/kbsync.toml config check
    """
    from kbsync.daemon.preflight import problems

    found = problems(app)
    for exc in found:
        click.echo(exc.one_line(), err=True)
    if found:
        sys.exit(found[0].exit_code)
    click.echo(f"config OK ({app.settings.source_file or 'built-in defaults'})")
