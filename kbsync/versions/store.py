"""The model store's files: base ⊕ delta log (docs/how-it-works.md). Which of them SQL names, and
which version is current, is `versions/registry.py`'s.

    state_dir/store/<model_key[:16]>/
        deltas/batch-<id>.safetensors     one file per applied batch (fp32 factors, sha256 in SQL)
        base/shared-<edited>.safetensors  every tensor but the edited ones, written once per set of
                                          edited names (the same file for every version of a config)
        base/meta/                        config, generation config, tokenizer: written once
        versions/<name>/                  loadable HF directories: model-edited.safetensors (the
                                          tensors this version changes) + model-shared.safetensors
                                          and the meta files, hard links into base/ (copies where a
                                          link is impossible) + model.safetensors.index.json
        current -> versions/<name>        switched last, atomically

A version costs the tensors it changes (issue 15 #9): 5 down_proj layers of SmolLM2-135M are
17.7 MB of its 540 MB; of a Llama-2-7B in fp32, 0.9 GB of 27 GB (docs/operations.md, "Disk per model version").
Version names end in "-<first 12 hex of the weights sha256>"; a version whose weights a
directory already holds (a rollback to an earlier state) links that directory's files.

The current model is always the base weights plus the ordered active deltas, computed the
same way every time (`materialise`), so rolling back the latest batch gives weights that
hash identically to those before it. Files are written before the SQL rows that name them
and reconciled with SQL by `reconcile` after a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from kbsync.diskspace import disk_full, is_full
from kbsync.durable import follow_umask, fsync_dir, fsync_tree
from kbsync.editing.delta import Delta, updated_weight
from kbsync.errors import StateError
from kbsync.model.loading import LoadedModel
from kbsync.model.weights import weights_sha256

SHARED_SHARD = "model-shared.safetensors"
EDITED_SHARD = "model-edited.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class ModelStore:
    def __init__(self, state_dir: Path, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model_key = loaded.identity
        self.root = state_dir / "store" / self.model_key[:16]
        self.deltas_dir = self.root / "deltas"
        self.versions_dir = self.root / "versions"
        self.base_dir = self.root / "base"
        self.current_link = self.root / "current"
        for folder in (self.deltas_dir, self.versions_dir, self.base_dir):
            folder.mkdir(parents=True, exist_ok=True)
        adapter = loaded.adapter
        params = dict(loaded.model.named_parameters(remove_duplicate=False))
        # The base value of every editable weight, kept so any delta log can be rebuilt exactly.
        self._base = {
            adapter.weight_name(layer): params[adapter.weight_name(layer)].detach().clone()
            for layer in range(adapter.n_layers)
        }
        self.active: list[tuple[int, Delta]] = []  # (batch id, delta) in the live model, in order

    # --- deltas -------------------------------------------------------------------------
    def delta_path(self, batch_id: int) -> Path:
        return self.deltas_dir / f"batch-{batch_id}.safetensors"

    def load_delta(self, batch_id: int, sha256: str) -> Delta:
        return Delta.load(self.delta_path(batch_id), expected_sha256=sha256)

    # --- materialisation ---------------------------------------------------------------
    def materialise(self, deltas: Sequence[tuple[int, Delta]]) -> None:
        """Set the live model to base + the given deltas in order (always the same arithmetic)."""
        params = dict(self.loaded.model.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for name, base in self._base.items():
                weight = base.clone()
                for _, delta in deltas:
                    if name in delta.names:
                        weight = updated_weight(weight, delta.dense(name), self.loaded.adapter)
                params[name].copy_(weight)
            for _, delta in deltas:
                unknown = set(delta.names) - set(self._base)
                if unknown:
                    raise StateError(f"a delta edits {sorted(unknown)[0]!r}, not an MLP output of this model; "
                                     "it was computed for another model")
        self.active = list(deltas)

    def push(self, batch_id: int, delta: Delta) -> None:
        """Add one more delta to the live model in place: the same arithmetic (and bits) as
        `materialise(active + [(batch_id, delta)])`, without rebuilding the layers before it."""
        delta.apply(self.loaded.model, self.loaded.adapter)
        self.active.append((batch_id, delta))

    def weights_sha256(self) -> str:
        """sha256 over every tensor of the live model, in name order."""
        return weights_sha256(self.loaded.model)

    # --- versions ----------------------------------------------------------------------
    def write_version(self, name: str) -> Path:
        """Write the live model as a loadable HF directory, atomically (temp dir, fsync, rename).

        Only the edited tensors are new bytes; the rest are hard links to files under base/.
        """
        final = self.versions_dir / name
        if final.exists():
            shutil.rmtree(final)  # a leftover of a crash before its SQL row: never referenced
        tmp: Path | None = None
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=f".tmp-{name}-"))
            same = self._version_with_weights(name)
            if same is not None:  # these weights are on disk already: link that directory's files
                for path in sorted(same.iterdir()):
                    link_or_copy(path, tmp / path.name)
            else:
                self._write_shards(tmp)
            fsync_tree(tmp)
            os.rename(tmp, final)
            fsync_dir(self.versions_dir)
        except Exception as exc:
            if is_full(exc):   # the edited tensors are the new bytes (the rest are links)
                edited = set(self.edited_names())
                needed = sum(t.numel() * t.element_size() for n, t in self._tensors().items() if n in edited)
                raise disk_full(self.versions_dir, f"writing model version {name}", needed) from None
            raise
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def edited_names(self) -> list[str]:
        """The editable weights whose live value differs from the base."""
        params = dict(self.loaded.model.named_parameters(remove_duplicate=False))
        return sorted(n for n, base in self._base.items() if not torch.equal(params[n].detach(), base))

    def _tensors(self) -> dict[str, torch.Tensor]:
        """What save_pretrained would save: every tensor once (a tied weight under its first name)."""
        out: dict[str, torch.Tensor] = {}
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for key, tensor in self.loaded.model.state_dict().items():
            ident = (tensor.data_ptr(), tuple(tensor.shape))
            if ident in seen:
                continue
            seen.add(ident)
            out[key] = tensor.detach().cpu().contiguous()
        return out

    def _write_shards(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = self._tensors()
        edited = [n for n in self.edited_names() if n in tensors]
        shared = self._shared_shard(tensors, edited)
        link_or_copy(shared, folder / SHARED_SHARD)
        for path in sorted(self._meta_dir().iterdir()):
            link_or_copy(path, folder / path.name)
        weight_map = {n: SHARED_SHARD for n in tensors if n not in edited}
        if edited:
            save_file({n: tensors[n] for n in edited}, str(folder / EDITED_SHARD), metadata={"format": "pt"})
            weight_map |= {n: EDITED_SHARD for n in edited}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")

    def _shared_shard(self, tensors: dict[str, torch.Tensor], edited: list[str]) -> Path:
        """base/shared-<hash of the edited names>.safetensors: the tensors no version of this set edits.
        Written once; they equal the base weights, so every version with the same edited set links it."""
        from safetensors.torch import save_file

        key = hashlib.sha256("\n".join(edited).encode()).hexdigest()[:12]
        path = self.base_dir / f"shared-{key}.safetensors"
        if not path.is_file():
            tmp = self.base_dir / f".{path.name}.tmp-{os.getpid()}"
            save_file({n: t for n, t in tensors.items() if n not in edited}, str(tmp), metadata={"format": "pt"})
            fsync_tree(tmp)
            os.replace(tmp, path)
            fsync_dir(self.base_dir)
        return path

    def _meta_dir(self) -> Path:
        """Config, generation config and tokenizer files, written once for every version to link."""
        meta = self.base_dir / "meta"
        if not meta.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=self.base_dir, prefix=".meta-"))
            model = self.loaded.model
            model.config.save_pretrained(tmp)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(tmp)
            self.loaded.tokenizer.save_pretrained(tmp)
            fsync_tree(tmp)
            try:
                os.rename(tmp, meta)
            except OSError:  # another writer made it first
                shutil.rmtree(tmp, ignore_errors=True)
        return meta

    def _version_with_weights(self, name: str) -> Path | None:
        """A complete version directory whose name carries the same weights hash as `name`."""
        _, sep, sha = name.rpartition("-")
        if not sep or len(sha) < 12:
            return None
        for path in sorted(self.versions_dir.glob(f"*-{sha}")):
            if not path.name.startswith(".") and path.name != name and (path / INDEX_FILE).is_file():
                return path
        return None

    def set_current(self, path: Path | None) -> None:
        """Point `current` at a version directory (or remove it: the base model), atomically."""
        if path is None:
            if self.current_link.is_symlink():
                self.current_link.unlink()
            return
        tmp = self.root / f".current-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.relpath(path, self.root), tmp)
        os.replace(tmp, self.current_link)
        fsync_dir(self.root)

    def current_target(self) -> Path | None:
        return self.current_link.resolve() if self.current_link.is_symlink() else None

    # --- housekeeping ------------------------------------------------------------------
    def remove_version(self, path: Path) -> None:
        if self.current_target() == path.resolve():
            raise StateError(f"refusing to delete {path}: it is the current version")
        shutil.rmtree(path, ignore_errors=True)

    def reconcile(self, referenced_deltas: Iterable[Path], referenced_versions: Iterable[Path],
                  current: Path | None) -> list[Path]:
        """Remove files no SQL row names (left by a crash), fix the pointer; returns what was removed."""
        keep_d = {p.resolve() for p in referenced_deltas}
        keep_v = {p.resolve() for p in referenced_versions}
        removed = []
        for path in self.deltas_dir.iterdir():
            if path.resolve() not in keep_d:
                path.unlink()
                removed.append(path)
        for path in self.versions_dir.iterdir():
            if path.resolve() not in keep_v:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if self.current_target() != (current.resolve() if current else None):
            self.set_current(current)
        return removed


def link_or_copy(source: Path, dest: Path) -> None:
    """A hard link where the file system allows one (same device, link count), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def export_version(source: Path, dest: Path) -> Path:
    """Copy a version directory for serving (atomically into `dest`), with the modes the umask gives
    new files (the state directory's are 0600: a serving user could not read them)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StateError(f"{dest} exists and is not an empty directory; choose an empty or new directory")
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        follow_umask(tmp)   # not the 0600 / 0700 of the state directory's files: another user serves it
        fsync_tree(tmp)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except OSError as exc:
        if is_full(exc):
            raise disk_full(dest.parent, f"exporting to {dest}", sum(f.stat().st_size for f in source.iterdir()),
                            "free space there, or export to another disk") from None
        raise StateError(f"cannot export to {dest} ({exc.strerror or exc}); choose a writable path") from exc
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
