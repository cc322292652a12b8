"""`kbsync diff`: find where the model disagrees with the KB and queue those edits."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kbsync.cli.main import cli
from kbsync.config import parse_as_of
from kbsync.errors import KbsyncError
from kbsync.logs import console, get_logger
from kbsync.runtime import App
from kbsync.store.events import record_event

log = get_logger(__name__)


def record_failure(app: App, kind: str, exc: BaseException) -> None:
    """A failed run is an event too, so `kbsync status` does not show the previous success."""
    error = exc.one_line() if isinstance(exc, KbsyncError) else f"{type(exc).__name__}: {exc}"
    try:
        with app.database().session() as s:
            record_event(s, kind, run_id=app.run_id, config_hash=app.settings.hash(), ok=False, error=error)
    except KbsyncError as db_exc:  # the database itself is what failed: the error above says so
        log.warning("event_not_recorded", kind=kind, reason=db_exc.one_line())


@cli.command()
@click.option("--relation", "relations", multiple=True, help="Only this relation id (repeatable), e.g. P36.")
@click.option("--subject", "subjects", multiple=True, help="Only this entity id (repeatable), e.g. Q142.")
@click.option("--full", is_flag=True, help="Probe every fact, not only new and changed ones.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Read at most this many facts.")
@click.option("--dry-run", is_flag=True, help="Probe and show, but write nothing.")
@click.option("--snapshot-only", is_flag=True,
              help="Record what the KB says as the snapshot without probing or queueing (adopt an existing KB): "
                   "the next diff probes only what changes after it.")
@click.option("--accept-shrink", is_flag=True,
              help="Take a read of far fewer facts than the snapshot holds as it is (the KB lost them): refused "
                   "otherwise, as an outage or a wrong file more likely.")
@click.option("--json", "as_json", is_flag=True, help="Print the table and totals as JSON.")
@click.option("--as-of", "as_of", default=None, metavar="WHEN",
              help="Decide what is current as of this ISO date/time (UTC) instead of now; overrides [kb] as_of.")
@click.pass_obj
def diff(app: App, relations: tuple[str, ...], subjects: tuple[str, ...], full: bool, limit: int | None,
         dry_run: bool, snapshot_only: bool, accept_shrink: bool, as_json: bool, as_of: str | None) -> None:
    """Read the KB, probe the model on new/changed facts, queue the disagreements.

    Example: kbsync diff --relation P36 --full
    """
    from kbsync.sync.from_settings import diff_from_settings  # the model stack: only when diffing

    try:
        moment = parse_as_of(as_of) if as_of else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    if snapshot_only and (dry_run or full):
        raise click.UsageError("--snapshot-only probes nothing: drop --dry-run and --full, or drop --snapshot-only")
    db = app.database()
    err = console()   # the log's console: its lines print above the bar
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("probing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if not err.is_terminal:
                log.info("probe_progress", done=done, total=total)

        try:
            report = diff_from_settings(app.settings, db, app.state_dir, run_id=app.run_id, relations=relations,
                                        subjects=subjects, full=full, limit=limit, dry_run=dry_run,
                                        snapshot_only=snapshot_only, progress=progress,
                                        as_of=moment, accept_shrink=accept_shrink)
        except Exception as exc:
            if not dry_run:
                record_failure(app, "diff", exc)
            raise
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    if snapshot_only:
        click.echo(f"recorded {report.read} facts as the snapshot ({report.new} new, {report.changed} changed, "
                   f"{report.unchanged} unchanged); probed nothing, queued nothing")
        return
    table = Table(title="kbsync diff" + (" (dry run: nothing written)" if dry_run else ""))
    for col in ("subject", "relation", "KB answer", "model answer", "fact", "action"):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        table.add_row(f"{r.subject} {r.subject_label}", r.relation, r.kb_answer, r.model_answer, r.status, r.action)
    Console(width=160).print(table)
    would = "would be " if dry_run else ""
    click.echo(f"read {report.read} facts ({report.new} new, {report.changed} changed, {report.unchanged} unchanged); "
               f"probed {report.probed}: {report.agree} agree, {report.queued} {would}queued, "
               f"{report.superseded} {would}superseded" + (" (dry run: nothing written)" if dry_run else ""))
    if report.shrink:
        click.echo(f"accepted a shrink: the read had {report.read} facts where the snapshot held {report.shrink}; "
                   f"{report.forgotten} no longer in the KB were dropped from the snapshot")
    if report.damaged:
        batches = sorted({r.damaged_by for r in report.rows if r.damaged_by is not None})
        click.echo(f"damage: {report.damaged} fact(s) the model had right are wrong now, flagged against live "
                   f"batch(es) {', '.join(map(str, batches))} and not queued; `kbsync audit --damage` shows them, "
                   "`kbsync rollback BATCH` or `kbsync retry --damage BATCH` decides")
    if report.held:
        click.echo(f"held: {report.held} disagreement(s) not queued, each waiting for what its hold names: "
                   + "; ".join(f"{r.subject} {r.relation}: {r.held}" for r in report.rows if r.action == "held")[:2000])
    if report.settling or report.reverted or report.skipped_too_long:
        click.echo(f"settling {report.settling} (held by [kb] settle_s), reverted {report.reverted}, "
                   f"skipped {report.skipped_too_long} with a label over [kb] max_label_chars")
