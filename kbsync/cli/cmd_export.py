"""`kbsync export`: a model version as a HF directory, a GGUF file or a LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import click

from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--version", "version_id", type=int, default=None, help="Model version id (default: current).")
@click.option("--format", "fmt", type=click.Choice(["hf", "gguf", "lora"]), default="hf", show_default=True,
              help="hf: a directory transformers/vLLM load; gguf: one file for llama.cpp/Ollama; "
                   "lora: the delta log as a PEFT adapter directory with adapter.gguf for llama.cpp.")
@click.option("--precision", type=click.Choice(["f32", "f16"]), default=None,
              help="gguf: the edited matrices' precision (default [serve] gguf_precision).")
@click.option("--max-rank", type=click.IntRange(min=0), default=None,
              help="lora: compress past this rank, stating the error bound (default [serve] lora_max_rank; 0: exact).")
@click.pass_obj
def export(app: App, dest: Path, version_id: int | None, fmt: str, precision: str | None,
           max_rank: int | None) -> None:
    """Write a model version for serving: a HF directory, a GGUF file or a LoRA adapter.

    A GGUF export onto a GGUF base keeps every unedited tensor byte for byte (its quantisation
    and metadata) and writes only the edited matrices; a LoRA export is exact (the solve's own
    factors). docs/serving.md has the recipes for llama.cpp, Ollama and vLLM.

    Example: kbsync export --format gguf /srv/models/kb-current.gguf
    """
    from kbsync.cli.paths import output_dir, output_file
    from kbsync.sync.from_settings import configured_model_key

    current = " (current)" if version_id is None else ""
    if fmt == "hf":
        from kbsync.versions.registry import version_dir
        from kbsync.versions.store import export_version

        output_dir(dest)  # a bad destination fails first, not after reading the model
        # Only SQL and files are needed: the model's identity is read from its cache, not its weights.
        shown, source = version_dir(app.database(), configured_model_key(app.settings, app.state_dir), version_id)
        export_version(source, dest)
        click.echo(f"exported model version {shown}{current} (directory {source.name}) to {dest}")
        return
    from kbsync.diskspace import size
    from kbsync.serving.exports import Exported, export_gguf, export_lora

    key = configured_model_key(app.settings, app.state_dir)
    serve = app.settings.serve
    done: Exported
    if fmt == "gguf":
        output_file(dest)
        done = export_gguf(app.settings, app.database(), app.state_dir, key, dest, version_id,
                           precision or serve.gguf_precision)  # type: ignore[arg-type]
        how = ("converted from the Hugging Face base" if done.converted else
               f"{len(done.replaced)} edited matrices at {(precision or serve.gguf_precision).upper()}, "
               "every other tensor byte for byte from the base GGUF")
    else:
        output_dir(dest)
        done = export_lora(app.settings, app.database(), app.state_dir, key, dest, version_id,
                           serve.lora_max_rank if max_rank is None else max_rank)
        how = (f"rank {done.rank} on {len(done.modules)} modules, "
               + ("exact" if done.max_rel_error == 0 else f"compressed: relative error at most {done.max_rel_error:.2e}")
               + "; PEFT adapter and adapter.gguf")
    what = "the base model" if done.version_id is None else f"model version {done.version_id}{current}"
    click.echo(f"exported {what} as {fmt} to {dest} ({size(done.bytes)}): {how}")
