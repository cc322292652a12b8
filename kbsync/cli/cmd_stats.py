"""`kbsync stats`: precompute the key statistics C_l of the edited layers."""

from __future__ import annotations

import click

from kbsync.cli.main import cli
from kbsync.logs import console
from kbsync.runtime import App, Stop


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
    err = console()   # the log's console: its lines print above the bar
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
