"""AlphaEdit's null-space projection and the keys that later batches must preserve.

P = U0 U0^T where U0 are the eigenvectors of C (the mean-normalised second moment of the keys
of knowledge to keep) whose eigenvalues are below ``threshold``: for any key k0 of that
knowledge, P k0 is (nearly) zero, so an update of the form dW = X P leaves W k0 unchanged.

``PreservedKeys`` accumulates w K K^T of every applied batch per layer (AlphaEdit's ``cache_c``,
w = 1; MEMIT's ``edit_memory``, w = mu), so each new batch is also kept from overwriting the
earlier ones. It is saved as safetensors
by the model store beside the delta log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kbsync.durable import durable_file
from kbsync.errors import StateError


def nullspace_projection(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(cov.double())  # (d,), (d, d)
    u0 = evecs[:, evals < threshold]  # (d, d0)
    return u0 @ u0.T  # (d, d) float64


@dataclass
class PreservedKeys:
    kkt: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> sum of w K K^T (d_in, d_in) f64
    n_keys: dict[int, int] = field(default_factory=dict)  # layer -> number of keys summed

    def add(self, layer: int, keys: torch.Tensor, weight: float = 1.0) -> None:
        k = keys.double()  # (d_in, n)
        kkt = weight * (k @ k.T)
        prev = self.kkt.get(layer)
        self.kkt[layer] = kkt if prev is None else prev + kkt
        self.n_keys[layer] = self.n_keys.get(layer, 0) + k.shape[1]

    def add_delta(self, delta, weight: float = 1.0) -> None:
        """Record a verified batch: the keys its Delta carries (layer -> (d_in, n))."""
        for layer, k in sorted(delta.keys.items()):
            self.add(layer, k, weight)

    @classmethod
    def from_deltas(cls, deltas, weight: float = 1.0) -> PreservedKeys:
        """Rebuild from the active delta log (exact after a rollback)."""
        out = cls()
        for d in deltas:
            out.add_delta(d, weight)
        return out

    @classmethod
    def kept_by(cls, hp, deltas) -> PreservedKeys | None:
        """What the solve of `hp` keeps of these earlier batches: their keys at hp.preserved_weight
        (AlphaEdit 1, MEMIT edit_memory), or None when it keeps none (plain MEMIT)."""
        return cls.from_deltas(deltas, hp.preserved_weight) if hp.preserved_weight else None

    def plus(self, other: PreservedKeys) -> PreservedKeys:
        """The sum of both (neither is changed)."""
        out = PreservedKeys(dict(self.kkt), dict(self.n_keys))
        for layer, kkt in other.kkt.items():
            out.kkt[layer] = kkt if layer not in out.kkt else out.kkt[layer] + kkt
            out.n_keys[layer] = out.n_keys.get(layer, 0) + other.n_keys.get(layer, 0)
        return out

    def get(self, layer: int) -> torch.Tensor | None:
        return self.kkt.get(layer)

    def save(self, path: str | Path) -> None:
        tensors = {f"kkt::{layer}": t.contiguous() for layer, t in self.kkt.items()}
        meta = {f"n::{layer}": str(n) for layer, n in self.n_keys.items()}
        with durable_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> PreservedKeys:
        from safetensors import safe_open
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except Exception as exc:  # safetensors raises several types
            raise StateError(f"preserved-keys file {path} is unreadable ({exc}); rebuild it from the "
                             "delta log") from exc
        out = cls()
        for key, t in tensors.items():
            layer = int(key.split("::")[1])
            out.kkt[layer] = t
            out.n_keys[layer] = int(meta.get(f"n::{layer}", 0))
        return out
