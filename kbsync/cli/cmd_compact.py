"""`kbsync compact`: re-solve the delta log from the base as one delta."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.cli.writing import writer_for
from kbsync.runtime import App


@cli.command(name="compact")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Edits per mass edit of the re-solve (default [editing] compact_batch_size, else batch_size).")
@click.option("--wait", "lock_wait_s", type=float, default=0.0, show_default=True, help="Seconds to wait for the model lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def compact_cmd(app: App, batch_size: int | None, lock_wait_s: float, as_json: bool) -> None:
    """Re-solve every active edit from the base weights as one delta that replaces the delta log.

    The result is verified (every edit's checks, and at least as many edits must hold as on the
    log it replaces) and becomes a new model version in one audited event; the replaced deltas
    are kept, so `kbsync rollback` of the compaction batch restores the previous weights.

    Example: kbsync compact && kbsync audit
    """
    from kbsync.sync.compact import compact, compaction_error

    report = compact(writer_for(app), batch_size=batch_size, lock_wait_s=lock_wait_s)
    if report.ok:
        from kbsync.cli.reloading import reload_after

        reload_after(app, "compact")
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
    else:
        click.echo(f"compaction batch {report.batch_id}: {report.n_edits} edits of batches {report.replaced} "
                   f"re-solved from the base; efficacy {_share(report.efficacy_before)} -> {_share(report.efficacy_after)}; "
                   + (f"weights {report.weights_before[:12]} -> {report.weights_after[:12]}" if report.ok
                      else f"FAILED: {report.reason}"))
    if not report.ok:
        raise compaction_error(report)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
