"""`kbsync daemon` and `kbsync run-once`: diff then apply, on a schedule or once."""

from __future__ import annotations

import click

from kbsync.cli.main import cli
from kbsync.config import Settings, load_settings
from kbsync.runtime import App


def _reloader(ctx: click.Context, app: App):  # type: ignore[no-untyped-def]
    """How SIGHUP reads the config again: the same file and the same --log-* flags."""
    params = ctx.find_root().params
    overrides: dict[str, dict[str, object]] = {}
    if params.get("log_level"):
        overrides.setdefault("logging", {})["level"] = params["log_level"]
    if params.get("log_format"):
        overrides.setdefault("logging", {})["format"] = params["log_format"]
    source = params.get("config_path") or app.settings.source_file

    def load() -> Settings:
        return load_settings(source, overrides=overrides)

    return load


def _run(ctx: click.Context, app: App, once: bool) -> int:
    from kbsync.daemon.loop import Daemon

    return Daemon(app, _reloader(ctx, app)).run(once=once)


@cli.command()
@click.option("--once", is_flag=True, help="Run one tick now and exit (same as `kbsync run-once`).")
@click.pass_context
def daemon(ctx: click.Context, once: bool) -> int:
    """Run diff then apply on the [schedule] (cron, UTC by default), one daemon per database.

    Speaks systemd's notify protocol (Type=notify, watchdog) when NOTIFY_SOCKET is set and
    serves Prometheus metrics when [metrics] enabled. The first SIGTERM finishes the current
    batch and exits 0; a second aborts it (its requests go back to the queue); SIGHUP reloads
    the config.

    Example: kbsync --config /etc/kbsync/kbsync.toml daemon
    """
    return _run(ctx, ctx.obj, once)


@cli.command(name="run-once")
@click.pass_context
def run_once(ctx: click.Context) -> int:
    """Run one tick (diff then apply) and exit: for cron and systemd timers.

    Exit 0 when every step succeeded; otherwise the code of the first failure (4 database,
    5 knowledge source, 6 model, 7 edits that failed verification, 1 anything else).

    Example: kbsync run-once || echo "kbsync tick failed"
    """
    return _run(ctx, ctx.obj, True)
