"""`kbsync export --format gguf | lora`: what the command writes, from settings, SQL and files.

    export_gguf(...)  one .gguf file: onto the base GGUF (gguf_export.py), or converted from a
                      Hugging Face base (gguf_convert.py)
    export_lora(...)  a directory: the PEFT adapter (adapter_config.json, adapter_model.safetensors)
                      and the same adapter for llama.cpp (adapter.gguf)

Only SQL and files are read; no model is loaded (a GGUF base's de-quantised cache names its
config and, for a conversion, its tensors).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kbsync.config import Settings
from kbsync.durable import follow_umask, fsync_tree
from kbsync.errors import StateError, VersionError
from kbsync.model.loading import bundled_gguf, source_directory
from kbsync.serving.gguf_export import Precision, edited_tensors, export_from_gguf
from kbsync.serving.gguf_names import GGUF_ARCHES
from kbsync.serving.log import version_log
from kbsync.serving.lora import lora_modules
from kbsync.serving.lora_files import write_gguf_lora, write_peft
from kbsync.store.db import Database

ADAPTER_GGUF = "adapter.gguf"


@dataclass
class Exported:
    path: Path
    version_id: int | None                # None: the base model
    batch_ids: list[int]
    rank: int = 0                         # LoRA: the adapter's rank (padded to the largest module's)
    modules: list[str] = field(default_factory=list)
    max_rel_error: float = 0.0            # LoRA: 0.0 when exact; else the worst module's bound
    replaced: list[str] = field(default_factory=list)   # GGUF: the tensors written anew
    converted: bool = False               # GGUF: converted from a Hugging Face base

    @property
    def bytes(self) -> int:
        files = [self.path] if self.path.is_file() else [p for p in self.path.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files)


def base_gguf(spec: str) -> Path | None:
    """The GGUF file the configured base came from (None: a Hugging Face base)."""
    if spec.startswith("builtin:"):
        return bundled_gguf(spec.removeprefix("builtin:"))
    path = Path(spec).expanduser()
    return path if path.suffix == ".gguf" else None


def base_config(settings: Settings, state_dir: Path) -> dict:
    return json.loads((source_directory(settings.model.path, state_dir) / "config.json").read_text())


def export_gguf(settings: Settings, db: Database, state_dir: Path, model_key: str, dest: Path,
                version_id: int | None = None, precision: Precision = "f32") -> Exported:
    log = version_log(db, model_key, version_id)
    if log.batch_ids and (log.path is None or not log.path.is_dir()):
        raise VersionError(f"model version {log.version_id} was pruned from disk ([state] keep_versions); "
                           "export --format lora writes it from the delta log")
    edited = edited_tensors(log.path if log.batch_ids else None)
    config = base_config(settings, state_dir)
    gguf_base = base_gguf(settings.model.path)
    if gguf_base is not None:
        replaced = export_from_gguf(gguf_base, edited, str(config.get("model_type", "")), dest, precision)
        return Exported(dest, log.version_id, log.batch_ids, replaced=sorted(replaced))
    from kbsync.serving.gguf_convert import convert_hf

    source = log.path if log.batch_ids and log.path is not None else source_directory(settings.model.path, state_dir)
    convert_hf(source, dest, precision)
    return Exported(dest, log.version_id, log.batch_ids, converted=True)


def export_lora(settings: Settings, db: Database, state_dir: Path, model_key: str, dest: Path,
                version_id: int | None = None, max_rank: int = 0) -> Exported:
    log = version_log(db, model_key, version_id)
    if not log.batch_ids:
        raise VersionError("the base model has no edits to write as an adapter; `kbsync apply` first")
    modules = lora_modules(log.merged, max_rank)
    config = base_config(settings, state_dir)
    model_type = str(config.get("model_type", ""))
    arch = GGUF_ARCHES.get(model_type)
    if arch is None:
        raise StateError(f"no GGUF architecture is known for model_type {model_type!r}; "
                         "the PEFT adapter alone: export --format lora is limited to "
                         + ", ".join(sorted(GGUF_ARCHES)))
    n_blocks = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        rank = write_peft(modules, tmp, settings.model.path, fan_in_fan_out=model_type == "gpt2")
        write_gguf_lora(modules, tmp / ADAPTER_GGUF, arch, n_blocks)
        follow_umask(tmp)
        fsync_tree(tmp)
        if dest.is_dir():
            dest.rmdir()   # new or empty (cli/paths.output_dir)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(dest, log.version_id, log.batch_ids, rank=rank, modules=[m.module for m in modules],
                    max_rel_error=max((m.rel_error for m in modules), default=0.0))
