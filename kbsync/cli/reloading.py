"""The serving engine's reload after a command changed the current version ([serve] reload)."""

from __future__ import annotations

import click

from kbsync.runtime import App
from kbsync.store.models import ServeReload


def reload_after(app: App, action: str) -> ServeReload | None:
    """Reload the engine if the current version changed (or the last reload failed); say how it went."""
    if app.settings.serve.reload == "none":
        return None
    from kbsync.serving.reload import reload_if_changed
    from kbsync.sync.from_settings import configured_model_key

    row = reload_if_changed(app.settings, app.database(), app.state_dir,
                            configured_model_key(app.settings, app.state_dir), action=action, run_id=app.run_id)
    if row is not None:
        click.echo(outcome_line(row), err=True)   # stderr: --json output stays one object
    return row


def outcome_line(row: ServeReload) -> str:
    version = "the base model" if row.model_version_id is None else f"version {row.model_version_id}"
    if row.state != "ok":
        return (f"serving: reload of {version} FAILED after {row.attempts} attempt(s): {row.detail}; "
                "`kbsync reload` tries again")
    said = "" if row.probed is None else f"; the served model named {row.agreed} of {row.probed} verified edits"
    return f"serving: {version} reloaded ({row.how}, {row.export} {row.path or 'unloaded'}){said}"
