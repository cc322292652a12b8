"""`kbsync apply`: pending edit requests into the model, in verified MEMIT batches."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from kbsync.cli.main import cli
from kbsync.cli.writing import writer_for
from kbsync.runtime import App, Interrupted, Stop
from kbsync.store.events import record_event
from kbsync.store.queue import count_pending

if TYPE_CHECKING:
    from kbsync.sync.apply import BatchOutcome


@cli.command()
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Edits per batch (default [editing] batch_size).")
@click.option("--max-edits", type=click.IntRange(min=1), default=None, help="Stop after this many edits.")
@click.option("--dry-run", is_flag=True, help="Show the batches that would be applied; change nothing.")
@click.option("--wait", "lock_wait_s", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another writer of the same model to finish.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def apply(app: App, batch_size: int | None, max_edits: int | None, dry_run: bool, lock_wait_s: float, as_json: bool) -> None:
    """Apply pending edit requests to the model in verified MEMIT batches.

    Every edit is judged on its own checks (greedy efficacy, paraphrases, neighbours); edits that
    fail are dropped and the rest re-solved, then the regression gate judges the rest of the model.
    Only edits whose own checks passed are published (verified); the others fail with their own
    reason and wait for a change. The first SIGTERM/SIGINT finishes the current batch, the second
    aborts it (its requests go back to the queue).

    Example: kbsync apply --batch-size 20 --max-edits 100
    """
    size = batch_size or app.settings.editing.batch_size
    if dry_run:
        with app.database().session() as s:
            pending = count_pending(s)
        n = min(pending, max_edits or pending)
        plan = {"pending": pending, "would_apply": n, "batches": -(-n // size) if n else 0, "batch_size": size}
        click.echo(json.dumps(plan) if as_json else
                   f"{pending} pending; would apply {n} in {plan['batches']} batch(es) of up to {size} (dry run)")
        return
    console = Console(stderr=True)

    def show(outcome: BatchOutcome) -> None:
        if console.is_terminal:
            console.print(f"batch {outcome.batch_id}: {outcome.n_verified} of {outcome.n_edits} edits verified "
                          f"({outcome.seconds:.1f}s) {outcome.reason}")

    from kbsync.sync.apply import ApplyReport, apply_pending
    from kbsync.sync.compact import compact_if_long
    from kbsync.sync.rollback import rollback_damaged

    report = ApplyReport()
    rolled_back: list[int] = []
    compaction = None
    # One stop policy with the daemon: the first SIGTERM/SIGINT finishes the batch, the second aborts it.
    # The same steps as the daemon's tick: undo damaging batches (a policy), apply, compact (a policy).
    with Stop().handling_signals() as stop:
        writer = writer_for(app, stop)
        try:
            if app.settings.verify.on_damage == "rollback":
                rolled_back = [r.batch_id for r in rollback_damaged(writer, lock_wait_s=lock_wait_s)]
            apply_pending(writer, batch_size=size, max_edits=max_edits, lock_wait_s=lock_wait_s,
                          on_batch=show, report=report)
            compaction = compact_if_long(writer, lock_wait_s=lock_wait_s)
        except Interrupted as exc:
            with app.database().session() as s:
                record_event(s, "apply", run_id=app.run_id, config_hash=app.settings.hash(), ok=False,
                             interrupted=exc.signal_name, applied=report.applied, failed=report.failed)
            raise
    with app.database().session() as s:
        record_event(s, "apply", run_id=app.run_id, config_hash=app.settings.hash(), ok=report.ok,
                     applied=report.applied, failed=report.failed, batches=len(report.batches),
                     stopped=stop.signal_name or None)
    from kbsync.cli.reloading import reload_after

    reload_after(app, "apply")   # [serve]: the engine loads the new current version (a failure is shown, kept)
    if as_json:
        click.echo(json.dumps(report.as_dict() | {"rolled_back": rolled_back, "compaction": (
            compaction.__dict__ if compaction is not None else None)}, indent=2))
        return
    if rolled_back:
        click.echo(f"rolled back batches {rolled_back}: damage was flagged against them ([verify] on_damage)")
    table = Table(title=f"kbsync apply: {report.applied} verified, {report.failed} failed")
    kinds = ("efficacy_acc", "paraphrase_acc", "held_out_acc", "neighbour_acc")
    for col in ("batch", "claimed", "verified", "failed", "back", "state", *kinds, "seconds", "facts it holds", "reason"):
        table.add_column(col, overflow="fold")
    for b in report.batches:
        sh = b.shares  # a kind nothing measured (no neighbour available) is absent: shown as "-"
        table.add_row(str(b.batch_id), str(b.n_edits), str(b.n_verified), str(b.n_failed), str(b.n_requeued), b.state,
                      *(f"{sh[k]:.2f}" if k in sh else "-" for k in kinds), f"{b.seconds:.1f}",
                      ", ".join(b.held) or "-", b.reason)
    Console(width=160).print(table)
    if not report.batches:
        click.echo("nothing to apply: the queue has no pending requests")
    if report.saturated:
        click.echo(f"the model is saturated: {report.saturated}; `kbsync status` shows the headroom, "
                   "`kbsync compact` re-solves the log from the base (docs/operations.md)")
    if compaction is not None:
        click.echo(f"compacted the delta log ({compaction.n_edits} edits) as batch {compaction.batch_id}: "
                   + ("ok" if compaction.ok else f"failed, the log is unchanged: {compaction.reason}"))
