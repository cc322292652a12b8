"""A batch's weight update as data: low-rank factors per edited weight, applied and reverted exactly.

    dW = U V^T   U (d_out, r), V (d_in, r), r <= batch size, fp32   (dense (d_out, d_in) where smaller)

Applying writes W_new = (W.float() + dW).to(W.dtype) in the weight's storage layout, the same
arithmetic as ``add_delta_to_state_dict``, so a model edited in place and one materialised from
base + delta log hold the same bits. Reverting copies back the saved original tensors (a
floating-point subtraction would not undo the addition).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kbsync.diskspace import disk_full, is_full
from kbsync.durable import durable_file
from kbsync.errors import DeltaIntegrityError, StateError
from kbsync.model.adapters import ArchitectureAdapter


@dataclass
class Delta:
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # name -> (U, V)
    dense_updates: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (d_out, d_in)
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (d_in, n) keys after the edit
    meta: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_factors(cls, updates: dict[str, tuple[torch.Tensor, torch.Tensor]], **kw) -> Delta:
        """Keep (U, V) unless the dense matrix is smaller."""
        delta = cls(**kw)
        for name, (u, v) in updates.items():
            u, v = u.float().contiguous(), v.float().contiguous()  # (d_out, r), (d_in, r)
            d_out, d_in, r = u.shape[0], v.shape[0], u.shape[1]
            if r * (d_out + d_in) < d_out * d_in:
                delta.factors[name] = (u, v)
            else:
                delta.dense_updates[name] = u @ v.T  # (d_out, d_in)
        return delta

    @classmethod
    def merged(cls, deltas: list[Delta], meta: dict[str, str] | None = None) -> Delta:
        """One delta equal to the sum of `deltas` (compaction): per weight the factors side by side,
        dW = sum_j U_j V_j^T = [U_1 ... U_m] [V_1 ... V_m]^T, or the dense sum where any part is dense;
        the keys of every part, concatenated per layer (what AlphaEdit preserves from later batches)."""
        out = cls(meta=dict(meta or {}))
        for name in sorted({n for d in deltas for n in d.names}):
            parts = [d for d in deltas if name in d.names]
            if all(name in d.factors for d in parts):
                u = torch.cat([d.factors[name][0] for d in parts], dim=1)  # (d_out, sum r)
                v = torch.cat([d.factors[name][1] for d in parts], dim=1)  # (d_in, sum r)
                out = out._with(cls.from_factors({name: (u, v)}))
            else:
                out.dense_updates[name] = torch.stack([d.dense(name) for d in parts]).sum(0)  # (d_out, d_in)
        for layer in sorted({layer for d in deltas for layer in d.keys}):
            out.keys[layer] = torch.cat([d.keys[layer].float() for d in deltas if layer in d.keys], dim=1)
        return out

    def _with(self, other: Delta) -> Delta:
        self.factors.update(other.factors)
        self.dense_updates.update(other.dense_updates)
        return self

    @property
    def names(self) -> list[str]:
        return sorted([*self.factors, *self.dense_updates])

    def dense(self, name: str) -> torch.Tensor:
        if name in self.dense_updates:
            return self.dense_updates[name]
        u, v = self.factors[name]
        return u @ v.T  # (d_out, d_in) fp32

    def apply(self, model: torch.nn.Module, adapter: ArchitectureAdapter) -> AppliedDelta:
        params = dict(model.named_parameters(remove_duplicate=False))
        saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        with torch.no_grad():
            for name in self.names:
                if name not in params:
                    raise StateError(f"the delta edits {name!r}, which this model does not have; "
                                     "apply it to the model it was computed for")
                weight = params[name]
                saved.append((weight, weight.detach().clone()))
                weight.copy_(updated_weight(weight.detach(), self.dense(name), adapter))
        return AppliedDelta(saved)

    def save(self, path: str | Path) -> str:
        """Write atomically as safetensors; returns the file's sha256 (hex)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, (u, v) in self.factors.items():
            tensors[f"{name}::U"], tensors[f"{name}::V"] = u.contiguous(), v.contiguous()
        for name, d in self.dense_updates.items():
            tensors[f"{name}::dense"] = d.contiguous()
        for layer, k in self.keys.items():
            tensors[f"keys::{layer}"] = k.float().contiguous()
        try:
            with durable_file(path) as tmp:
                save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in self.meta.items()})
        except Exception as exc:
            if is_full(exc):
                needed = sum(x.numel() * x.element_size() for x in tensors.values())
                raise disk_full(Path(path).parent, f"writing the delta {Path(path).name}", needed) from None
            raise
        return file_sha256(Path(path))

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None) -> Delta:
        path = Path(path)
        if not path.is_file():
            raise StateError(f"delta file {path} is missing; restore it from backup or roll the batch back")
        if expected_sha256 is not None and (actual := file_sha256(path)) != expected_sha256:
            raise DeltaIntegrityError(f"delta file {path} has sha256 {actual[:12]}… but the audit "
                                      f"records {expected_sha256[:12]}…; restore the file or roll the batch back")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise DeltaIntegrityError(f"delta file {path} is not a readable safetensors file ({exc}); "
                                      "restore it or roll the batch back") from exc
        delta = cls(meta=meta)
        for key, t in tensors.items():
            name, _, part = key.rpartition("::")
            if name == "keys":
                delta.keys[int(part)] = t
            elif part == "dense":
                delta.dense_updates[name] = t
            elif part == "U":
                delta.factors[name] = (t, tensors[f"{name}::V"])
        return delta


@dataclass
class AppliedDelta:
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]]  # (parameter, its original value)

    def revert(self) -> None:
        with torch.no_grad():
            for weight, original in reversed(self.saved):
                weight.copy_(original)
        self.saved = []


def updated_weight(weight: torch.Tensor, dense: torch.Tensor, adapter: ArchitectureAdapter) -> torch.Tensor:
    """W + dW in W's storage layout and dtype, computed in fp32, always the same way."""
    update = adapter.from_matrix(dense.to(weight.device))  # storage layout
    if update.shape != weight.shape:
        raise StateError(f"delta of shape {tuple(update.shape)} does not fit a weight of shape "
                         f"{tuple(weight.shape)}; apply it to the model it was computed for")
    return (weight.float() + update).to(weight.dtype)


def add_delta_to_state_dict(state_dict: dict[str, torch.Tensor], delta: Delta,
                            adapter: ArchitectureAdapter) -> dict[str, torch.Tensor]:
    """Materialise base + delta in a state dict (in place; returned for chaining)."""
    for name in delta.names:
        if name not in state_dict:
            raise StateError(f"the delta edits {name!r}, which this state dict lacks; "
                             "materialise onto the base model it was computed for")
        state_dict[name] = updated_weight(state_dict[name], delta.dense(name), adapter)
    return state_dict


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
