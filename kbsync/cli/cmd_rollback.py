"""`kbsync rollback`: undo a batch (or every batch damage was flagged against)."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.cli.writing import writer_for
from kbsync.runtime import App


@cli.command(name="rollback")
@click.argument("batch", type=int, required=False)
@click.option("--damaged", is_flag=True,
              help="Every live batch that damage was flagged against (what [verify] on_damage = rollback does).")
@click.option("--dry-run", is_flag=True, help="Show what would be undone; change nothing.")
@click.option("--wait", "lock_wait_s", type=float, default=0.0, show_default=True, help="Seconds to wait for the model lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def rollback_cmd(app: App, batch: int | None, damaged: bool, dry_run: bool, lock_wait_s: float,
                 as_json: bool) -> None:
    """Remove a batch's edits from the model and re-verify the remaining edits.

    Example: kbsync rollback 7
    """
    if (batch is None) == (not damaged):
        raise click.UsageError("give a BATCH id or --damaged (one of them)")
    if damaged:
        from kbsync.sync.rollback import rollback_damaged

        if dry_run:
            raise click.UsageError("--dry-run takes a BATCH id; `kbsync status` lists the batches flagged with damage")
        done = rollback_damaged(writer_for(app), lock_wait_s=lock_wait_s)
        if done:
            from kbsync.cli.reloading import reload_after

            reload_after(app, "rollback")
        if as_json:
            click.echo(json.dumps([r.__dict__ for r in done], indent=2))
        else:
            click.echo(f"rolled back {len(done)} batch(es) with damage flagged against them: "
                       f"{[r.batch_id for r in done]}")
        return
    assert batch is not None
    from kbsync.sync.rollback import rollback

    report = rollback(writer_for(app), batch, dry_run=dry_run, lock_wait_s=lock_wait_s)
    if not dry_run:
        from kbsync.cli.reloading import reload_after

        reload_after(app, "rollback")   # [serve]: the engine drops the batch too
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
        return
    if dry_run:
        click.echo(f"would roll back batch {batch} ({len(report.requests)} requests); "
                   f"remaining batches {report.remaining_batches} (dry run)")
        return
    if report.recompacted_by is not None:
        click.echo(f"rolled back batch {batch}: recompacted without it as batch {report.recompacted_by}, weights "
                   f"{report.weights_before[:12]} -> {report.weights_after[:12]}; "
                   f"{len(report.no_longer_hold)} remaining edits no longer hold")
        return
    same = f", identical to version {report.restores_version}" if report.restores_version else ""
    click.echo(f"rolled back batch {batch}: weights {report.weights_before[:12]} -> {report.weights_after[:12]}{same}; "
               f"{len(report.no_longer_hold)} remaining edits no longer hold")
