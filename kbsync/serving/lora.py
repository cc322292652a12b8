"""The delta log as LoRA factors, exact: the solve's own factors, not an SVD that loses edits.

A MEMIT batch's update of one weight is low rank (editing/delta.py):
    dW = U V^T = R K^T (lambda C + K K^T)^-1     U = R (d_out, r), V^T = K^T(...)^-1 (r, d_in)
so a log of batches is, per weight, the factors side by side (Delta.merged):
    dW = [U_1 .. U_m] [V_1 .. V_m]^T             rank r = edits summed over the batches
and that is a LoRA module with B = U (d_out, r), A = V^T (r, d_in), scaling alpha / r = 1.

Past `max_rank` the factors are compressed to the best rank-k approximation (Eckart-Young),
through QR so no (d_out, d_in) matrix is formed:
    U = Q_u R_u, V = Q_v R_v;  R_u R_v^T = P S Q^T;  B = Q_u P_k S_k, A = (Q_v Q_k)^T
with the error stated per module: ||dW - B A||_F / ||dW||_F = sqrt(sum_{i>k} s_i^2 / sum s_i^2).
A weight the log holds dense (where factors were larger) is factored by an SVD, exact up to its
numerical rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kbsync.editing.delta import Delta


@dataclass
class LoraModule:
    module: str            # "model.layers.4.mlp.down_proj"
    a: torch.Tensor        # (r, d_in)  fp32
    b: torch.Tensor        # (d_out, r) fp32
    full_rank: int         # r before compression
    rel_error: float       # ||dW - B A||_F / ||dW||_F (0.0: exact)

    @property
    def rank(self) -> int:
        return self.a.shape[0]


def lora_modules(delta: Delta, max_rank: int = 0) -> list[LoraModule]:
    """One LoRA module per edited weight of `delta` (a merged log); `max_rank` 0: never compress."""
    out = []
    for name in delta.names:
        module = name.removesuffix(".weight")
        if name in delta.factors:
            u, v = (t.double() for t in delta.factors[name])          # (d_out, r), (d_in, r)
            if max_rank and u.shape[1] > max_rank:
                out.append(_compressed(module, u, v, max_rank))
            else:
                out.append(LoraModule(module, v.T.float().contiguous(), u.float().contiguous(), u.shape[1], 0.0))
        else:
            out.append(_from_dense(module, delta.dense_updates[name].double(), max_rank))
    return out


def _compressed(module: str, u: torch.Tensor, v: torch.Tensor, k: int) -> LoraModule:
    qu, ru = torch.linalg.qr(u)                                      # (d_out, r), (r, r)
    qv, rv = torch.linalg.qr(v)                                      # (d_in, r), (r, r)
    p, s, qt = torch.linalg.svd(ru @ rv.T)                           # (r, r), (r,), (r, r)
    b = qu @ p[:, :k] * s[:k]                                        # (d_out, k)
    a = (qv @ qt[:k].T).T                                            # (k, d_in)
    return LoraModule(module, a.float().contiguous(), b.float().contiguous(), u.shape[1], _dropped(s, k))


def _from_dense(module: str, dw: torch.Tensor, max_rank: int) -> LoraModule:
    p, s, qt = torch.linalg.svd(dw, full_matrices=False)              # (d_out, m), (m,), (m, d_in)
    exact = int((s > s[0] * max(dw.shape) * torch.finfo(torch.float32).eps).sum()) if s.numel() else 0
    k = min(exact, max_rank) if max_rank else exact
    return LoraModule(module, qt[:k].float().contiguous(), (p[:, :k] * s[:k]).float().contiguous(), exact,
                      _dropped(s, k))


def _dropped(s: torch.Tensor, k: int) -> float:
    total = float((s ** 2).sum())
    return (float((s[k:] ** 2).sum()) / total) ** 0.5 if total > 0 else 0.0


def padded(modules: list[LoraModule]) -> tuple[int, list[LoraModule]]:
    """All modules at one rank (the largest), zero rows/columns added: exact, and the one `r` that
    vLLM and every PEFT version read (no per-module rank pattern needed)."""
    r = max((m.rank for m in modules), default=0)
    out = []
    for m in modules:
        extra = r - m.rank
        a = torch.cat([m.a, m.a.new_zeros(extra, m.a.shape[1])]) if extra else m.a        # (r, d_in)
        b = torch.cat([m.b, m.b.new_zeros(m.b.shape[0], extra)], dim=1) if extra else m.b  # (d_out, r)
        out.append(LoraModule(m.module, a, b, m.full_rank, m.rel_error))
    return r, out
