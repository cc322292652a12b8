"""Opening the database: engine, sessions, and the migration gate.

Every command except `kbsync db upgrade` calls `open_database(..., require_current=True)`,
which refuses a database behind its migrations with SchemaOutOfDateError.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from kbsync.diskspace import disk_full, free_bytes, is_full
from kbsync.errors import DatabaseError, DiskFullError, SchemaOutOfDateError, StateError


def migrations_dir() -> Path:
    """The Alembic scripts: `migrations/` in a checkout, `kbsync/migrations` in a wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StateError("the Alembic migrations are missing from this installation; reinstall kbsync")


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def writable(folder: Path) -> bool:
    """Whether files can be made in `folder`: access(2), which also says no on a read-only mount
    (even to root). One place, so that tests can stand in for a mounted backup."""
    return os.access(folder, os.W_OK)


def read_only_uri(path: Path) -> str:
    """The SQLite URI a reader opens `path` with, creating nothing beside it.

    mode=ro while a writer has the database open (its -wal and -shm exist: nothing new is made);
    immutable=1 when no writer has (no -wal) or the folder cannot be written (a mounted backup):
    SQLite then takes no lock and makes no -wal/-shm of its own."""
    quiet = not Path(f"{path}-wal").exists() or not writable(path.parent)
    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if quiet else "")


def make_engine(url: str, busy_timeout_s: float = 30.0, read_only: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"database url {url!r} is not a SQLAlchemy URL; fix [database] url") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise DatabaseError(
                f"the database directory {folder} does not exist; create it or fix [database] url / [state] dir"
            )
    try:
        if read_only and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)

            def connect() -> sqlite3.Connection:  # the URI is chosen at each connection (see read_only_uri)
                return sqlite3.connect(read_only_uri(path), uri=True, timeout=busy_timeout_s, check_same_thread=False)

            engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
        elif parsed.get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise DatabaseError(f"cannot use database url {url!r}: {exc}; install its driver or fix the url") from exc
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:  # unreachable, or not a database at all ("file is not a database")
        raise _full(engine, exc, "opening the database") or \
            DatabaseError(f"cannot open the database: {_first_line(exc)}; check [database] url") from exc


def schema_gaps(engine: Engine) -> list[str]:
    """Tables and columns of kbsync's newest schema that the database lacks ("table.column")."""
    from kbsync.store.models import Base

    inspector = inspect(engine)
    have = set(inspector.get_table_names())
    gaps = []
    for table in Base.metadata.sorted_tables:
        if table.name not in have:
            gaps.append(table.name)
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        gaps += [f"{table.name}.{c.name}" for c in table.columns if c.name not in columns]
    return gaps


def unstamped(engine: Engine) -> bool:
    """kbsync's tables without an `alembic_version` row: created outside Alembic, or the row was lost."""
    from kbsync.store.models import Base

    if current_revision(engine) is not None:
        return False
    return bool(set(inspect(engine).get_table_names()) & set(Base.metadata.tables))


UNSTAMPED = ("the database has kbsync's tables but no schema revision (no alembic_version row), so "
             "`kbsync db upgrade` cannot tell what to migrate; if its tables are the newest schema run "
             "`kbsync db stamp` (it checks them first), else `kbsync db stamp --revision REV` with the revision "
             "they were created at, then `kbsync db upgrade`; or restore a backup")


def stamp(url: str, revision: str = "head") -> str:
    """Record `revision` as the schema of an unstamped database, after checking the tables for head."""
    engine = make_engine(url)
    try:
        have = current_revision(engine)
        if have is not None:
            raise DatabaseError(f"the database is already at revision {have}; `kbsync db upgrade` migrates it")
        target = head_revision() if revision == "head" else revision
        if target == head_revision():
            gaps = schema_gaps(engine)
            if gaps:
                raise DatabaseError(f"the tables are not the newest schema (missing {', '.join(gaps[:5])}); "
                                    "stamp the revision they were created at with --revision, then upgrade")
        try:
            with engine.begin() as conn:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = conn
                command.stamp(cfg, target)
        except (SQLAlchemyError, CommandError) as exc:
            raise DatabaseError(f"cannot stamp revision {target!r}: {_first_line(exc)}; "
                                "`kbsync db revision` shows the known head") from exc
        return current_revision(engine) or ""
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str]:
    """Apply migrations; returns (revision before, revision after)."""
    engine = make_engine(url)
    before = current_revision(engine)
    if before is None and unstamped(engine):
        engine.dispose()
        raise SchemaOutOfDateError(UNSTAMPED)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"migration failed: {_first_line(exc)}") from exc
    after = current_revision(engine)
    engine.dispose()
    return before, after or ""


class Database:
    """An engine plus a session factory, for one database URL."""

    def __init__(self, url: str, busy_timeout_s: float = 30.0, read_only: bool = False) -> None:
        self.url, self.read_only = url, read_only
        self.engine = make_engine(url, busy_timeout_s, read_only)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def check_current(self) -> str:
        have, want = current_revision(self.engine), head_revision()
        if have is None and unstamped(self.engine):
            raise SchemaOutOfDateError(UNSTAMPED)
        if have != want:
            state = "empty" if have is None else f"at {have}"
            raise SchemaOutOfDateError(
                f"the database is {state}, behind its migrations (head {want}); run `kbsync db upgrade`"
            )
        return have

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except OperationalError as exc:
                session.rollback()
                if "locked" in str(exc).lower():
                    raise DatabaseError(
                        "the database is locked by another kbsync process; wait for it or raise [database] busy_timeout_s"
                    ) from exc
                raise _full(self.engine, exc, "writing the database") or \
                    DatabaseError(f"database error: {_first_line(exc)}") from exc
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, busy_timeout_s: float = 30.0, require_current: bool = True,
                  read_only: bool = False) -> Database:
    """The database at `url`; `read_only` (status, audit, a read-only dashboard) opens SQLite so that
    it works on a mounted backup or a full disk and leaves no file behind (`read_only_uri`)."""
    parsed = make_url(url) if "://" in url else None
    if require_current and parsed is not None and parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:") and not Path(parsed.database).exists():
            # Do not leave an empty file behind: connecting would create one.
            raise SchemaOutOfDateError(f"there is no database at {parsed.database} yet; run `kbsync db upgrade`")
    db = Database(url, busy_timeout_s, read_only)
    if require_current:
        db.check_current()
    return db


LOW_SPACE = 1 << 20   # SQLite says "disk I/O error" for a write a full disk refused, as for a failing disk


def _full(engine: Engine, exc: BaseException, doing: str) -> DiskFullError | None:
    """A SQLite error that is the disk being full: the one-line error naming the disk (not "check
    [database] url", which is the wrong fix); None for any other error."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    path = Path(engine.url.database)
    free = free_bytes(path)
    io_error = "disk i/o error" in str(exc).lower() and free is not None and free < LOW_SPACE
    return disk_full(path, doing, fix="free space there; `kbsync status` and `kbsync audit` still read it") \
        if is_full(exc) or io_error else None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
