"""`kbsync audit`: the audit views (kbsync/store/views.py) as tables or JSON."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from kbsync.cli.main import cli
from kbsync.runtime import App
from kbsync.store.views import audit_rows

# Columns a person reads in the table; --json prints every column of the view.
SHOWN = {
    "batches": ("batch_id", "state", "algorithm", "n_edits", "started_at", "state_reason"),
    "batch": ("request_id", "subject", "subject_label", "relation", "target_old", "target_new", "request_state"),
    "history": ("at", "subject_label", "relation", "from_state", "to_state", "reason", "batch_id"),
    "failed": ("request_id", "subject_label", "relation", "target_new", "reason", "batch_id"),
    "damage": ("batch_id", "batch_state", "subject_label", "relation", "expected", "answer", "found_by", "state"),
    "holds": ("subject", "relation", "kind", "batch_id", "failures", "not_before", "reason"),
}

@cli.command()
@click.option("--subject", default=None, help="Entity id, e.g. Q142: the history of its facts.")
@click.option("--relation", default=None, help="Relation id, e.g. P36.")
@click.option("--batch", type=int, default=None, help="What this batch changed.")
@click.option("--failed", is_flag=True, help="Edits that failed and why.")
@click.option("--damage", is_flag=True, help="Facts a batch damaged (answered right before it, wrong after it).")
@click.option("--holds", "held", is_flag=True,
              help="Facts held from the queue (rolled back, failed and waiting, poison, refused) and why.")
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list.")
@click.pass_obj
def audit(app: App, subject: str | None, relation: str | None, batch: int | None, failed: bool, damage: bool,
          held: bool, as_json: bool) -> None:
    """Answer audit questions from the SQL views: batches, one fact's history, a batch, failures.

    Example: kbsync audit --subject Q142 --relation P36
    """
    app.read_only = True   # nothing written: works on a mounted backup or a full disk
    kind, title, rows = audit_rows(app.database(), subject, relation, batch, failed, damage, held)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:  # a table without columns prints as a blank line
        click.echo(f"{title}: no rows")
        return
    table = Table(title=f"{title} ({len(rows)} rows)")
    columns = [c for c in SHOWN[kind] if rows and c in rows[0]]
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console(width=160).print(table)
