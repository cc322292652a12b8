"""The closed-form layer updates, in float64, returned as low-rank factors dW = U V^T.

MEMIT (Meng et al. 2023, eq. 14):
    dW = R K^T (lam C + K K^T)^-1                 R (d_out, n) residuals, K (d_in, n) keys
       = U V^T   with U = R,  V = (lam C + K K^T)^-1 K      (the matrix is SPD: Cholesky)

AlphaEdit (Fang et al. 2025), with P the projector onto the null space of the preserved keys
and S = K K^T + K_p K_p^T (this batch's keys and every earlier batch's):
    dW = R K^T P (S P + l2 I)^-1 = R K^T (P S + l2 I)^-1 P
       = U V^T   with U = R,  V = P (S P + l2 I)^-1 K
so dW k = 0 for every k with P k = 0 (the preserved keys).
"""

from __future__ import annotations

import torch

from kbsync.errors import EditError


def memit_factors(resid: torch.Tensor, keys: torch.Tensor, cov: torch.Tensor,
                  lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    k = keys.double()  # (d_in, n)
    a = lam * cov.double() + k @ k.T  # (d_in, d_in) SPD
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise EditError("lam*C + K K^T is not positive definite (too few covariance samples or "
                        "lam too small); raise cov_samples or cov_lambda")
    v = torch.cholesky_solve(k, chol)  # (d_in, n)
    return resid.double(), v


def alphaedit_factors(resid: torch.Tensor, keys: torch.Tensor, proj: torch.Tensor,
                      preserved_kkt: torch.Tensor | None, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    k = keys.double()  # (d_in, n)
    p = proj.double()  # (d_in, d_in)
    s = k @ k.T  # (d_in, d_in)
    if preserved_kkt is not None:
        s = s + preserved_kkt.double()
    eye = torch.eye(s.shape[0], dtype=torch.float64, device=s.device)
    try:
        v = p @ torch.linalg.solve(s @ p + l2 * eye, k)  # (d_in, n)
    except RuntimeError as exc:
        raise EditError("AlphaEdit's system S P + l2 I is singular; raise alphaedit_l2") from exc
    return resid.double(), v
