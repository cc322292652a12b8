"""`kbsync apply`, `rollback`, `compact`, `verify`, `export`, `stats`: the commands that touch the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from kbsync.cli.main import cli
from kbsync.errors import VerificationError
from kbsync.runtime import App, Interrupted, Stop, worker_name
from kbsync.store.events import record_event
from kbsync.store.queue import count_pending

if TYPE_CHECKING:
    from kbsync.sync.apply import BatchOutcome
    from kbsync.versions.writer import ModelWriter

# The editing stack (torch, transformers) is imported inside the commands that need it, so
# `kbsync status` and `kbsync db upgrade` start in a fraction of a second; apply, rollback and
# verify take the model's lock and check their arguments before the model is loaded.


def _writer(app: App, stop: Stop | None = None) -> ModelWriter:
    from kbsync.sync.from_settings import model_writer

    return model_writer(app.settings, app.database(), app.state_dir, run_id=app.run_id, worker=worker_name(),
                        stop=stop)


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

    Each batch is computed, applied, checked (efficacy, paraphrases, neighbours) and either
    committed as a new model version or reverted and marked failed. The first SIGTERM/SIGINT
    finishes the current batch, the second aborts it (its requests go back to the queue).

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
            console.print(f"batch {outcome.batch_id}: {outcome.n_edits} edits {outcome.state} "
                          f"({outcome.seconds:.1f}s) {outcome.reason}")

    from kbsync.sync.apply import ApplyReport, apply_pending

    report = ApplyReport()
    # One stop policy with the daemon: the first SIGTERM/SIGINT finishes the batch, the second aborts it.
    with Stop().handling_signals() as stop:
        try:
            apply_pending(_writer(app, stop), batch_size=size, max_edits=max_edits, lock_wait_s=lock_wait_s,
                          on_batch=show, report=report)
        except Interrupted as exc:
            with app.database().session() as s:
                record_event(s, "apply", run_id=app.run_id, config_hash=app.settings.hash(), ok=False,
                             interrupted=exc.signal_name, applied=report.applied, failed=report.failed)
            raise
    with app.database().session() as s:
        record_event(s, "apply", run_id=app.run_id, config_hash=app.settings.hash(), ok=report.ok,
                     applied=report.applied, failed=report.failed, batches=len(report.batches),
                     stopped=stop.signal_name or None)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(title=f"kbsync apply: {report.applied} applied, {report.failed} failed")
    kinds = ("efficacy_acc", "paraphrase_acc", "efficacy", "paraphrase", "neighbour")
    for col in ("batch", "edits", "state", *kinds, "seconds", "reason"):
        table.add_column(col)
    for b in report.batches:
        sh = b.shares  # a kind nothing measured (no neighbour available) is absent: shown as "-"
        table.add_row(str(b.batch_id), str(b.n_edits), b.state, *(f"{sh[k]:.2f}" if k in sh else "-" for k in kinds),
                      f"{b.seconds:.1f}", b.reason)
    Console(width=160).print(table)
    if not report.batches:
        click.echo("nothing to apply: the queue has no pending requests")


@cli.command(name="rollback")
@click.argument("batch", type=int)
@click.option("--dry-run", is_flag=True, help="Show what would be undone; change nothing.")
@click.option("--wait", "lock_wait_s", type=float, default=0.0, show_default=True, help="Seconds to wait for the model lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def rollback_cmd(app: App, batch: int, dry_run: bool, lock_wait_s: float, as_json: bool) -> None:
    """Remove a batch's edits from the model and re-verify the remaining edits.

    Example: kbsync rollback 7
    """
    from kbsync.sync.rollback import rollback

    report = rollback(_writer(app), batch, dry_run=dry_run, lock_wait_s=lock_wait_s)
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

    report = compact(_writer(app), batch_size=batch_size, lock_wait_s=lock_wait_s)
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

    report = verify(_writer(app), batch)
    if as_json:
        click.echo(json.dumps(report.__dict__))
    else:
        click.echo(f"checked {report.checked} edits: {report.still_hold} hold, {len(report.failed)} drifted {report.failed}")
    if report.failed:
        raise VerificationError(f"{len(report.failed)} applied edit(s) no longer hold: requests {report.failed} "
                                "(now failed); see `kbsync audit --failed`, roll back or re-queue them")


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", "version_id", type=int, default=None, help="Model version id (default: current).")
@click.pass_obj
def export(app: App, dest: Path, version_id: int | None) -> None:
    """Write a model version as a HF directory for serving (safetensors, config, tokenizer).

    Example: kbsync export /srv/models/kb-current
    """
    from kbsync.cli.paths import output_dir
    from kbsync.sync.from_settings import configured_model_key
    from kbsync.versions.registry import version_path
    from kbsync.versions.store import export_version

    output_dir(dest)  # a bad destination fails first, not after reading the model
    # Only SQL and files are needed: the model's identity is read from its cache, not its weights.
    source = version_path(app.database(), configured_model_key(app.settings, app.state_dir), version_id)
    export_version(source, dest)
    click.echo(f"exported model version {version_id or 'current'} ({source.name}) to {dest}")


@cli.command()
@click.pass_obj
def stats(app: App) -> None:
    """Precompute the key statistics C_l of the edited layers (cached; apply needs them).

    Prints how long the pass takes (measured on its first texts) before the rest of it runs:
    that is how long a first `kbsync apply` waits when the statistics are not cached.

    Example: kbsync stats
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from kbsync.editing.configured import corpus_for
    from kbsync.editing.covariance import PassClock, cache_path, duration, samples_for
    from kbsync.editing.stats_cache import resolve_corpus
    from kbsync.versions.context import editing_context

    ctx = editing_context(app.settings, app.state_dir)
    corpus = corpus_for(app.settings.editing.corpus, ctx.loaded)
    n = samples_for(corpus, ctx.hparams.cov_samples)
    layers = list(ctx.hparams.layers)
    spec = resolve_corpus(app.settings.editing.corpus, app.settings.model.path)
    what = f"layers {layers}, {n} texts of {spec}"
    if all(cache_path(ctx.stats_dir, ctx.model_key, layer, corpus.identity, n).is_file() for layer in layers):
        ctx.moments()  # reads them, and records them for `kbsync status`
        click.echo(f"key statistics for {what} are cached in {ctx.stats_dir}: apply does not wait for them")
        return
    if n < ctx.hparams.cov_samples:
        click.echo(f"the corpus has {n} texts, fewer than cov_samples = {ctx.hparams.cov_samples}: all {n} are used")
    click.echo(f"computing key statistics for {what}")
    err = Console(stderr=True)
    clock = PassClock(n)
    said = False
    columns = (TextColumn("key statistics"), BarColumn(), MofNCompleteColumn(), TextColumn("texts"),
               TimeRemainingColumn())
    with Stop().handling_signals() as stop, Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("key statistics", total=n)

        def progress(done: int, total: int) -> None:
            nonlocal said
            clock.update(done)
            bar.update(task, completed=done, total=total)
            if clock.measured and not said:
                said = True  # before the rest of the pass: what a first apply waits
                click.echo(f"estimate: {clock.estimate()}; a first `kbsync apply` waits this long")

        ctx.moments(progress, check_stop=stop.check_outside_batch)
    click.echo(f"key statistics for {what} ready in {ctx.stats_dir} after {clock.elapsed_s:.0f} s "
               f"({duration(clock.elapsed_s)})")
