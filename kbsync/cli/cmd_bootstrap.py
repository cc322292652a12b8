"""`kbsync bootstrap --dump FILE`: the snapshot from Wikidata's JSON dump, or a reconcile with it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kbsync.cli.cmd_diff import record_failure
from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.option("--dump", "dump", required=True, type=click.Path(path_type=Path),
              help="A Wikidata JSON dump: .json.gz or .json.bz2, one entity a line (latest-all.json.gz).")
@click.option("--probe", is_flag=True, help="Probe and queue on the first bootstrap too (by default it only "
              "records the snapshot; a later bootstrap reconciles: probes and queues what changed).")
@click.option("--dry-run", is_flag=True, help="Read and compare, probe what would be, write nothing.")
@click.option("--accept-shrink", is_flag=True, help="Take a dump with far fewer facts than the snapshot as it is.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@click.pass_obj
def bootstrap(app: App, dump: Path, probe: bool, dry_run: bool, accept_shrink: bool, as_json: bool) -> None:
    """Read Wikidata's JSON dump into the snapshot (bounded memory); run again on a newer dump to
    reconcile: what the change stream missed is probed and queued. Then `kbsync follow`.

    Example: kbsync bootstrap --dump latest-all.json.gz
    """
    from kbsync.sync.from_settings import bootstrap_from_settings  # the model stack: only when used

    try:
        report = bootstrap_from_settings(app.settings, app.database(), app.state_dir, dump, run_id=app.run_id,
                                         probe=probe, dry_run=dry_run, accept_shrink=accept_shrink)
    except Exception as exc:
        if not dry_run:
            record_failure(app, "bootstrap", exc)
        raise
    d = report.diff
    assert d is not None
    if as_json:
        click.echo(json.dumps({"entities": report.entities, "watched": report.watched, "newest": report.newest,
                               "reconcile": report.reconcile, "diff": {k: v for k, v in d.as_dict().items()
                                                                       if k != "rows"}}))
        return
    what = "reconciled with" if report.reconcile else "bootstrapped from"
    click.echo(f"{what} {dump}: {report.entities} entities, {report.watched} watched items, {d.read} facts "
               f"({d.new} new, {d.changed} changed, {d.unchanged} unchanged); probed {d.probed}, queued {d.queued}"
               + (" (dry run: nothing written)" if dry_run else "")
               + (f"; the change stream resumes from {report.newest}" if report.newest and not dry_run else ""))
