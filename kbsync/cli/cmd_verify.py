"""`kbsync verify`: the drift re-check of applied edits."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.cli.writing import writer_for
from kbsync.errors import VerificationError
from kbsync.runtime import App


@cli.command(name="verify")
@click.option("--batch", type=int, default=None, help="Only this batch's edits.")
@click.option("--all", "all_", is_flag=True, help="Every applied batch (the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def verify_cmd(app: App, batch: int | None, all_: bool, as_json: bool) -> None:
    """Re-run the checks of applied edits on the current model (drift check) and record them.

    Example: kbsync verify --all
    """
    if batch is not None and all_:
        raise click.UsageError("give --batch N or --all, not both")
    from kbsync.sync.drift import verify

    report = verify(writer_for(app), batch)
    if as_json:
        click.echo(json.dumps(report.__dict__))
    else:
        click.echo(f"checked {report.checked} edits: {report.still_hold} hold, {len(report.failed)} drifted {report.failed}")
    if report.failed:
        raise VerificationError(f"{len(report.failed)} applied edit(s) no longer hold: requests {report.failed} "
                                "(now failed); see `kbsync audit --failed`, roll back or re-queue them")
