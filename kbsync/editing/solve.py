"""The closed-form layer updates, in float64, returned as low-rank factors dW = U V^T.

MEMIT (Meng et al. 2023, eq. 14):
    dW = R K^T (lam C + K K^T)^-1                 R (d_out, n) residuals, K (d_in, n) keys
       = U V^T   with U = R,  V = (lam C + K K^T)^-1 K      (the matrix is SPD: Cholesky)

AlphaEdit (Fang et al. 2025), with P the projector onto the null space of the preserved keys
and S = K K^T + K_p K_p^T (this batch's keys and every earlier batch's):
    dW = R K^T P (S P + l2 I)^-1 = R K^T (P S + l2 I)^-1 P
       = U V^T   with U = R,  V = P (S P + l2 I)^-1 K
so dW k = 0 for every k with P k = 0 (the preserved keys).

MEMIT with edit memory (edit_memory = mu > 0) keeps every earlier batch's keys K_p as AlphaEdit's S
does, as a third term of the same least squares, min ||dW K - R||^2 + lam ||dW C^1/2||^2 + mu ||dW K_p||^2:
    dW = R K^T (lam C + mu K_p K_p^T + K K^T)^-1

ENCORE's norm constraint (Gupta et al. 2025) adds alpha ||dW||_F^2 to the objective, which adds
alpha I to the matrix that is inverted (alpha = norm_constraint, 0: off):
    MEMIT      dW = R K^T (lam C + K K^T + alpha I)^-1
    AlphaEdit  dW = R K^T P (S P + (l2 + alpha) I)^-1
"""

from __future__ import annotations

import torch

from kbsync.errors import EditError


def memit_factors(resid: torch.Tensor, keys: torch.Tensor, cov: torch.Tensor, lam: float, alpha: float = 0.0,
                  preserved_kkt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`preserved_kkt`: mu K_p K_p^T, already weighted (PreservedKeys)."""
    k = keys.double()  # (d_in, n)
    a = lam * cov.double() + k @ k.T  # (d_in, d_in) SPD
    if preserved_kkt is not None:
        a = a + preserved_kkt.double()
    if alpha:
        a = a + alpha * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    v = torch.cholesky_solve(k, spd_cholesky(a))  # (d_in, n)
    return resid.double(), v


def spd_cholesky(a: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of a symmetric positive (semi-)definite matrix.

    A C estimated from a corpus that spans fewer directions than d_in makes λC + KKᵀ only
    semi-definite; then a ridge of 1e-10, 1e-8, 1e-6 × mean(diag) is added (float64), the
    smallest that makes it definite, as numerical libraries do ("jitter").
    """
    chol, info = torch.linalg.cholesky_ex(a)
    scale = float(a.diagonal().mean().abs()) or 1.0
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    for jitter in (1e-10, 1e-8, 1e-6):
        if int(info) == 0:
            return chol
        chol, info = torch.linalg.cholesky_ex(a + jitter * scale * eye)
    if int(info) != 0:
        raise EditError("lam*C + K K^T is not positive definite (too few covariance samples or "
                        "lam too small); raise cov_samples or cov_lambda")
    return chol


def alphaedit_factors(resid: torch.Tensor, keys: torch.Tensor, proj: torch.Tensor,
                      preserved_kkt: torch.Tensor | None, l2: float,
                      alpha: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    k = keys.double()  # (d_in, n)
    p = proj.double()  # (d_in, d_in)
    s = k @ k.T  # (d_in, d_in)
    if preserved_kkt is not None:
        s = s + preserved_kkt.double()
    eye = torch.eye(s.shape[0], dtype=torch.float64, device=s.device)
    try:
        v = p @ torch.linalg.solve(s @ p + (l2 + alpha) * eye, k)  # (d_in, n)
    except RuntimeError as exc:
        raise EditError("AlphaEdit's system S P + l2 I is singular; raise alphaedit_l2") from exc
    return resid.double(), v
