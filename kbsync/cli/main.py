"""The `kbsync` command: a thin layer over the library.

Errors print as one line, `TypeName: message`, and exit with the code of their branch of
`kbsync.errors` (ConfigError 2, StateError 3, DatabaseError 4, ...).
"""

from __future__ import annotations

import sys

import click

from kbsync import __version__
from kbsync.config import Settings, load_settings
from kbsync.errors import ConfigError, KbsyncError
from kbsync.logs import configure_logging
from kbsync.runtime import App, Interrupted


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="kbsync")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $KBSYNC_CONFIG, else ./kbsync.toml if present, else built-in defaults).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None,
              help="Log level (overrides [logging] level).")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None,
              help="Log format: JSON lines or console (overrides [logging] format).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str | None, log_format: str | None) -> None:
    """kbsync keeps a language model's factual memory in step with a knowledge base.

    It reads facts (Wikidata over SPARQL, or local RDF), finds where the model disagrees,
    queues those edits in SQL, writes them into the weights with MEMIT, verifies them,
    and keeps an audit trail that can undo any batch.

    Example: kbsync db upgrade && kbsync diff && kbsync apply
    """
    overrides: dict[str, dict[str, object]] = {}
    if log_level:
        overrides.setdefault("logging", {})["level"] = log_level
    if log_format:
        overrides.setdefault("logging", {})["format"] = log_format
    try:
        settings = load_settings(config_path, overrides=overrides)
    except ConfigError:
        if not ctx.obj == HELP_ASKED:
            raise
        settings = Settings()  # a subcommand's --help needs no configuration: a broken one must not hide it
    run_id = configure_logging(settings.logging.level, settings.logging.format)
    app = App(settings=settings, run_id=run_id)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    """Attach every command module (each adds its commands to `cli`)."""
    import importlib
    import pkgutil

    import kbsync.cli as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"kbsync.cli.{info.name}")


HELP_ASKED = "help-asked"


def main(argv: list[str] | None = None) -> None:
    _register()
    argv = sys.argv[1:] if argv is None else argv
    # click runs the group (which loads the config) before a subcommand sees its --help.
    asked = HELP_ASKED if any(a in ("-h", "--help") for a in argv) else None
    try:
        rv = cli.main(args=argv, prog_name="kbsync", standalone_mode=False, obj=asked)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, like every other error
        hint = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
        message = " ".join(exc.format_message().split()).rstrip(".")   # not "integer.; see"
        click.echo(f"UsageError: {message}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"ConfigError: {line}", err=True)
        sys.exit(exc.exit_code)
    except KbsyncError as exc:
        click.echo(exc.one_line(), err=True)
        sys.exit(exc.exit_code)
    except Interrupted as exc:  # the stop signal's second stage, or the first outside a batch
        click.echo(f"Interrupted: stopped by {exc.signal_name}; unfinished work went back to the queue", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
