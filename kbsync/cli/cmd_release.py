"""`kbsync release`: let held facts be queued again (a rolled-back edit, a poison request, a
failed or refused edit waiting for a change)."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.argument("fact", nargs=-1, metavar="[SUBJECT RELATION]...")
@click.option("--batch", "batch_id", type=int, default=None, help="The facts held by this batch (e.g. rolled back).")
@click.option("--kind", type=click.Choice(["rolled_back", "failed", "poison", "refused"]), default=None,
              help="Only holds of this kind.")
@click.option("--all", "all_", is_flag=True, help="Every active hold.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def release(app: App, fact: tuple[str, ...], batch_id: int | None, kind: str | None, all_: bool,
            as_json: bool) -> None:
    """Release held facts: the next diff queues them again if the model still disagrees with the KB.

    A fact is held after its edit was rolled back (until the KB value changes or this command),
    when its request was poison, and while a failed or refused edit waits for a change.

    Example: kbsync release Q142 P36
    """
    if len(fact) % 2:
        raise click.UsageError("give facts as SUBJECT RELATION pairs, e.g. `kbsync release Q142 P36`")
    if (bool(fact) + (batch_id is not None) + all_) != 1:
        raise click.UsageError("give SUBJECT RELATION pairs, --batch N or --all (one of them)")
    from kbsync.store.events import actor
    from kbsync.sync.retry import release_holds

    pairs = [(fact[i], fact[i + 1]) for i in range(0, len(fact), 2)] or None
    report = release_holds(app.database(), facts=pairs, batch_id=batch_id, kind=kind, run_id=app.run_id,
                           config_hash=app.settings.hash(), asked_by=actor())
    if as_json:
        click.echo(json.dumps(report.released))
        return
    click.echo(f"released {len(report.released)} held fact(s)"
               + "".join(f"\n  {r['subject']} {r['relation']} ({r['kind']}, batch {r['batch']})" for r in report.released)
               + ("\nthe next `kbsync diff` queues each again if the model still disagrees with the KB"
                  if report.released else ""))
