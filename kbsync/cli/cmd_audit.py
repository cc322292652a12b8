"""`kbsync audit`: the audit views (kbsync/store/views.py) as tables or JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from kbsync.cli.app import App
from kbsync.cli.main import cli
from kbsync.errors import ConfigError

# Columns a person reads in the table; --json prints every column of the view.
SHOWN = {
    "batches": ("batch_id", "state", "algorithm", "n_edits", "started_at", "state_reason"),
    "batch": ("request_id", "subject", "subject_label", "relation", "target_old", "target_new", "request_state"),
    "history": ("at", "subject_label", "relation", "from_state", "to_state", "reason", "batch_id"),
    "failed": ("request_id", "subject_label", "relation", "target_new", "reason", "batch_id"),
}

BATCHES_SQL = """
    SELECT id AS batch_id, state, algorithm, n_edits, started_at, finished_at, state_reason
    FROM batches ORDER BY id
"""


def audit_rows(app: App, subject: str | None, relation: str | None, batch: int | None,
               failed: bool) -> tuple[str, str, list[dict[str, Any]]]:
    """(kind, title, rows) of the view that answers the question the flags ask."""
    where, params = [], {}
    for column, value in (("subject", subject), ("relation", relation), ("batch_id", batch)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    if failed:
        kind, title, sql = "failed", "failed edits and why", f"SELECT * FROM v_failed_edits{clause} ORDER BY request_id"
    elif batch is not None and subject is None and relation is None:
        kind, title, sql = "batch", f"what batch {batch} changed", f"SELECT * FROM v_batch_changes{clause} ORDER BY request_id"
    elif where:
        kind, title, sql = "history", "history of the fact(s)", f"SELECT * FROM v_fact_history{clause} ORDER BY at, transition_id"
    else:
        kind, title, sql = "batches", "batches", BATCHES_SQL
    with app.database().session() as s:
        if batch is not None and s.scalar(text("SELECT count(*) FROM batches WHERE id = :b"), {"b": batch}) == 0:
            raise ConfigError(f"there is no batch {batch}; `kbsync audit` lists the batches")
        result = s.execute(text(sql), params)
        rows = [{k: _utc(k, v) for k, v in r._mapping.items()} for r in result]
    return kind, title, rows


def _utc(column: str, value: Any) -> Any:
    """Times print as ISO 8601 UTC with the zone on SQLite (stored naive) and PostgreSQL alike."""
    if column != "at" and not column.endswith("_at"):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, datetime):
        return value
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


@cli.command()
@click.option("--subject", default=None, help="Entity id, e.g. Q142: the history of its facts.")
@click.option("--relation", default=None, help="Relation id, e.g. P36.")
@click.option("--batch", type=int, default=None, help="What this batch changed.")
@click.option("--failed", is_flag=True, help="Edits that failed and why.")
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list.")
@click.pass_obj
def audit(app: App, subject: str | None, relation: str | None, batch: int | None, failed: bool, as_json: bool) -> None:
    """Answer audit questions from the SQL views: batches, one fact's history, a batch, failures.

    Example: kbsync audit --subject Q142 --relation P36
    """
    kind, title, rows = audit_rows(app, subject, relation, batch, failed)
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
