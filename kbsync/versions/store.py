"""The model store: base ⊕ delta log (DESIGN.md §2).

    state_dir/models/<model_key>/
        deltas/batch-<id>.safetensors     one file per applied batch (fp32 factors, sha256 in SQL)
        versions/<name>/                  complete HF directories (safetensors, config, tokenizer)
        current -> versions/<name>        switched last, atomically

The current model is always the base weights plus the ordered active deltas, computed the
same way every time (`materialise`), so rolling back the latest batch gives weights that
hash identically to those before it. Files are written before the SQL rows that name them
and reconciled with SQL by `reconcile` after a crash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from kbsync.durable import fsync_dir, fsync_tree
from kbsync.editing.delta import Delta, updated_weight
from kbsync.errors import StateError
from kbsync.model.loading import LoadedModel


class ModelStore:
    def __init__(self, state_dir: Path, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model_key = loaded.identity
        self.root = state_dir / "store" / self.model_key[:16]
        self.deltas_dir = self.root / "deltas"
        self.versions_dir = self.root / "versions"
        self.current_link = self.root / "current"
        for folder in (self.deltas_dir, self.versions_dir):
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

    def weights_sha256(self) -> str:
        """sha256 over every tensor of the live model, in name order."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.loaded.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # --- versions ----------------------------------------------------------------------
    def write_version(self, name: str) -> Path:
        """Write the live model as a complete HF directory, atomically (temp dir, fsync, rename)."""
        final = self.versions_dir / name
        if final.exists():
            shutil.rmtree(final)  # a leftover of a crash before its SQL row: never referenced
        tmp = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=f".tmp-{name}-"))
        try:
            self.loaded.model.save_pretrained(tmp, safe_serialization=True)
            self.loaded.tokenizer.save_pretrained(tmp)
            fsync_tree(tmp)
            os.rename(tmp, final)
            fsync_dir(self.versions_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

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


def export_version(source: Path, dest: Path) -> Path:
    """Copy a version directory for serving (atomically into `dest`)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StateError(f"{dest} exists and is not an empty directory; choose an empty or new directory")
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        fsync_tree(tmp)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except OSError as exc:
        raise StateError(f"cannot export to {dest} ({exc.strerror or exc}); choose a writable path") from exc
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
