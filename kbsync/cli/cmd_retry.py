"""`kbsync retry`: failed requests back to the queue, or re-edits of damaged facts."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.errors import SelectionError
from kbsync.runtime import App


@cli.command()
@click.argument("request_ids", type=int, nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failed request.")
@click.option("--damage", "damage_of", type=int, default=None, metavar="BATCH",
              help="Queue re-edits of the facts this live batch damaged (right before it, wrong after it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def retry(app: App, request_ids: tuple[int, ...], all_: bool, damage_of: int | None, as_json: bool) -> None:
    """Put failed edit requests back in the queue (those the KB still agrees with), or re-edit damage.

    Example: kbsync retry --all
    """
    if (bool(request_ids) + all_ + (damage_of is not None)) != 1:
        raise click.UsageError("give request ids, --all or --damage BATCH (one of them)")
    from kbsync.store.events import actor
    from kbsync.sync.retry import retry_damage, retry_failed

    if damage_of is not None:
        from kbsync.sources.factory import open_catalogue

        report = retry_damage(app.database(), damage_of, open_catalogue(app.settings), run_id=app.run_id,
                              config_hash=app.settings.hash(), asked_by=actor())
    else:
        report = retry_failed(app.database(), None if all_ else list(request_ids), run_id=app.run_id,
                              config_hash=app.settings.hash(), asked_by=actor())
    noun = "damage" if damage_of is not None else "request"
    if as_json:
        click.echo(json.dumps({"requeued": report.requeued, "skipped": report.skipped}))
    else:
        what = f"re-edits of facts damaged by batch {damage_of}" if damage_of is not None else "failed requests"
        click.echo(f"re-queued {len(report.requeued)} {what} {report.requeued}")
        for rid, why in report.skipped.items():
            click.echo(f"  {noun} {rid} left as it is: {why}")
    if not report.requeued and report.skipped:  # what was named could not be retried: not a success
        first, why = next(iter(report.skipped.items()))
        more = f" (and {len(report.skipped) - 1} more)" if len(report.skipped) > 1 else ""
        raise SelectionError(f"nothing re-queued: {noun} {first}: {why}{more}; `kbsync audit --failed` lists "
                             "the failed requests")
