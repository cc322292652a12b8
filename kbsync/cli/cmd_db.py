"""`kbsync db ...`: schema migrations."""

from __future__ import annotations

import click

from kbsync.cli.main import cli
from kbsync.logs import get_logger
from kbsync.runtime import App
from kbsync.store import db as store_db
from kbsync.store.events import record_event

log = get_logger(__name__)


@cli.group()
def db() -> None:
    """Database schema: apply migrations, show the revision.

    Example: kbsync db upgrade
    """


@db.command()
@click.pass_obj
def upgrade(app: App) -> None:
    """Apply the Alembic migrations up to the newest schema (safe to run again).

    Example: kbsync db upgrade
    """
    if not app.settings.database.url:
        _ = app.state_dir
    before, after = store_db.upgrade(app.settings.database_url)
    log.info("db_upgrade", before=before, after=after)
    if before != after:
        with app.database().session() as s:
            record_event(s, "db_upgrade", run_id=app.run_id, config_hash=app.settings.hash(), before=before, after=after)
    click.echo(f"database at revision {after}" + ("" if before != after else " (already up to date)"))


@db.command(name="stamp")
@click.option("--revision", "rev", default="head", show_default=True,
              help="The schema revision the tables are at (see migrations/versions).")
@click.pass_obj
def stamp_cmd(app: App, rev: str) -> None:
    """Record the schema revision of a database whose tables exist but whose revision is lost.

    Stamping head first checks that every table and column of the newest schema is there.

    Example: kbsync db stamp && kbsync status
    """
    if not app.settings.database.url:
        _ = app.state_dir
    after = store_db.stamp(app.settings.database_url, rev)
    with app.database().session() as s:
        record_event(s, "db_stamp", run_id=app.run_id, config_hash=app.settings.hash(), revision=after)
    click.echo(f"database stamped at revision {after}")


@db.command()
@click.pass_obj
def revision(app: App) -> None:
    """Print the database's schema revision and the newest one this kbsync knows.

    Example: kbsync db revision
    """
    database = app.database(require_current=False)
    click.echo(f"current {store_db.current_revision(database.engine)}  head {store_db.head_revision()}")
