"""`kbsync export`: a model version as a directory a serving stack loads."""

from __future__ import annotations

from pathlib import Path

import click

from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", "version_id", type=int, default=None, help="Model version id (default: current).")
@click.pass_obj
def export(app: App, dest: Path, version_id: int | None) -> None:
    """Write a model version as a HF directory for serving (safetensors, config, tokenizer).

    Example: kbsync export /srv/models/kb-current
    """
    from kbsync.cli.paths import output_dir
    from kbsync.sync.from_settings import configured_model_key
    from kbsync.versions.registry import version_dir
    from kbsync.versions.store import export_version

    output_dir(dest)  # a bad destination fails first, not after reading the model
    # Only SQL and files are needed: the model's identity is read from its cache, not its weights.
    shown, source = version_dir(app.database(), configured_model_key(app.settings, app.state_dir), version_id)
    export_version(source, dest)
    current = " (current)" if version_id is None else ""
    click.echo(f"exported model version {shown}{current} (directory {source.name}) to {dest}")
