"""structlog set-up: JSON lines when stdout is not a terminal, console output when it is.

Every line of a run carries its `run_id` (bound once in `configure_logging`). On a terminal the
lines go through one rich console (`console()`), the one the CLI's progress bars draw on: a log
line prints above a live bar, whole, instead of breaking into it.
"""

from __future__ import annotations

import logging
import sys
import uuid

import structlog
from rich.console import Console
from rich.text import Text

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the moment (a test harness swaps it), never a stale one;
    under a live progress bar (which puts a proxy there) to the stream beneath it."""

    @staticmethod
    def _stream():  # type: ignore[no-untyped-def]
        return getattr(sys.stderr, "rich_proxied_file", sys.stderr)

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream(), "isatty", lambda: False)())


_console: Console | None = None


def console() -> Console:
    """The process's one stderr console: the CLI's progress bars draw on it and, on a terminal,
    log lines print through it (above a live bar, whole)."""
    global _console
    if _console is None:
        _console = Console(file=_CurrentStderr())  # type: ignore[arg-type]
    return _console


class _ConsoleLines:
    """Log lines printed through `console()`: above a live progress bar, and never hard-wrapped."""

    def write(self, text: str) -> int:
        if text.strip():
            console().print(Text.from_ansi(text.rstrip("\n")), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        console().file.flush()


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def configure_logging(level: str = "info", fmt: str = "auto", run_id: str | None = None) -> str:
    """Set up structlog for this process; returns the run id bound to every line.

    Libraries that log through the standard library (alembic, transformers, APScheduler) and
    Python warnings go through the same renderer: one stream, one format, UTC timestamps.
    """
    run_id = run_id or new_run_id()
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.reset_defaults()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_ConsoleLines() if use_console else _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id)
    # Library loggers stay quiet below warning unless debug is asked for.
    handler = logging.StreamHandler(_ConsoleLines() if use_console else _CurrentStderr())  # type: ignore[arg-type]
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level] if level == "debug" else max(_LEVELS[level], logging.WARNING))
    logging.captureWarnings(False)  # a second configure re-installs the hook whoever replaced it since
    logging.captureWarnings(True)
    return run_id


def get_logger(name: str = "kbsync") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
