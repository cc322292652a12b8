"""compute_delta: requests -> Delta, MEMIT Algorithm 1 (or AlphaEdit), leaving the model unchanged.

    1) z_i = h_i + delta_i at the last edited layer L              (targets.py, all edits at once)
       NAS (norm_anchor): z_i <- z_i * ||h_i|| / ||z_i||            (anchor_norms below)
    for i, l in enumerate(layers):
        2) K = keys at l, h = current residual at L               (keys.py LayerKeys, on the model edited so far)
        3) R = (z - h) / (len(layers) - i)                         (d, n)
           behind a post-MLP norm (Gemma 2/3, OLMo 2), R as a change of W_l k instead
           (families.mlp_output_change: the o' with norm(o') = norm(W_l k) + R, or the nearest)
        4) dW_l = R K^T (lam C_l + K K^T)^-1                      (solve.py; AlphaEdit: null-space form;
                                                                   edit_memory: + mu K_p K_p^T, earlier batches)
        5) apply dW_l temporarily
    restore every weight bit for bit; return the factors.

Norm anchoring (NAS, "Norm Anchors Make Model Edits Last", Liu et al. 2026): in sequential
editing the solved target vectors and the edited weights inflate each other's norms until the
model collapses; rescaling each solved target to a norm taken from the unedited model breaks
that loop. kbsync anchors z_i, the target residual at layer L, to the norm of the residual the
model had there before the batch, h_i (unmoved by earlier batches for a subject they did not
edit, as MEMIT keeps W k for other keys):

    z_i <- z_i * ||h_i|| / ||z_i||        so ||z_i|| = ||h_i||, only the direction is solved

(NAS's code rescales the MLP-output part v* = v0 + delta to the mean solved ||v*|| of a
CounterFact sample on the original model; kbsync's anchor needs no such statistic.) ENCORE's
early stop (early_stop_prob) is in targets.py, its norm constraint (norm_constraint) in solve.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from kbsync.errors import EditError, ModelError
from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.families import mlp_output_change
from kbsync.phases import phase

from .delta import AppliedDelta, Delta
from .hparams import EditHyperParams
from .keys import LayerKeys
from .nullspace import PreservedKeys, nullspace_projection
from .request import EditRequest
from .solve import alphaedit_factors, memit_factors
from .targets import Targets, batch_seed, compute_targets, context_templates


@contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients while delta is optimised (and the model in eval mode)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def anchor_norms(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """NAS: each row of z (n, d) rescaled to the norm of the same row of h (n, d)."""
    return z * (h.norm(dim=1) / z.norm(dim=1).clamp(min=1e-12))[:, None]  # (n, d)


@dataclass
class BatchTargets:
    """Step 1 of a batch, kept so the batch can be solved again without some of its edits: the
    target vectors (one row per request, in request order) and the context templates the keys
    are averaged over (drawn once per batch, from its full content)."""

    requests: list[EditRequest]
    targets: Targets
    templates: list[str]

    def without(self, request_ids: set[int]) -> BatchTargets:
        """The same targets less some requests (by request id): what a re-solve starts from."""
        keep = [i for i, r in enumerate(self.requests) if r.request_id not in request_ids]
        rows = torch.tensor(keep, dtype=torch.long)
        t = self.targets
        return BatchTargets([self.requests[i] for i in keep],
                            Targets(t.z[rows.to(t.z.device)], t.h[rows.to(t.h.device)], t.loss[rows], t.steps[rows]),
                            self.templates)


def _checked(model: torch.nn.Module, adapter: ArchitectureAdapter, requests: list[EditRequest],
             hparams: EditHyperParams, second_moments: dict[int, torch.Tensor] | None) -> None:
    hp = hparams
    if not requests:
        raise EditError("no edit requests to compute; queue some edits first")
    bad = [layer for layer in hp.layers if not 0 <= layer < adapter.n_layers]
    if bad:
        raise EditError(f"edit layers {bad} are outside the model's {adapter.n_layers} layers; fix [editing] layers")
    if second_moments is not None:
        missing = [layer for layer in hp.layers if layer not in second_moments]
        if missing:
            raise EditError(f"no second moment C for layers {missing}; compute it for every edited layer")
    for req in requests:
        _ = req.text  # subject in prompt, non-empty target


def compute_batch_targets(loaded_or_model, tokenizer, adapter: ArchitectureAdapter, requests: list[EditRequest],
                          hparams: EditHyperParams, timings: dict | None = None,
                          check_stop: Callable[[], None] | None = None) -> BatchTargets:
    """Step 1 for every request of a batch: z_i = h_i + delta_i (NAS-anchored when asked)."""
    model = loaded_or_model if isinstance(loaded_or_model, torch.nn.Module) else loaded_or_model.model
    hp = hparams
    _checked(model, adapter, requests, hp, None)
    device = next(model.parameters()).device
    try:
        with _frozen(model):
            templates = context_templates(model, tokenizer, hp, seed=batch_seed(requests, hp.prefix_seed))
            with phase("targets", timings, device):
                targets = compute_targets(model, tokenizer, adapter, requests, hp, templates, timings, check_stop)
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"out of memory computing {len(requests)} edits; lower the batch size") from exc
    if hp.norm_anchor:
        targets.z = anchor_norms(targets.z, targets.h)
    return BatchTargets(list(requests), targets, templates)


def solve_delta(loaded_or_model, tokenizer, adapter: ArchitectureAdapter, batch: BatchTargets,
                hparams: EditHyperParams, second_moments: dict[int, torch.Tensor],
                preserved: PreservedKeys | None = None, timings: dict | None = None,
                check_stop: Callable[[], None] | None = None) -> Delta:
    """Steps 2-5 for the batch's targets: the layer updates, spread over the edited layers."""
    model = loaded_or_model if isinstance(loaded_or_model, torch.nn.Module) else loaded_or_model.model
    hp, requests, targets = hparams, batch.requests, batch.targets
    _checked(model, adapter, requests, hp, second_moments)
    applied: list[AppliedDelta] = []
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    device = next(model.parameters()).device
    try:
        with _frozen(model):
            with phase("keys", timings, device):
                reader = LayerKeys(model, tokenizer, adapter, requests, batch.templates, list(hp.layers), hp.batch_rows)
            for i, layer in enumerate(hp.layers):
                if check_stop is not None:
                    check_stop()
                with phase("keys", timings, device):
                    k, cur = reader.read(layer)  # (d_in, n), (n, d)
                with phase("solve", timings, device):
                    resid = (targets.z - cur).T / (len(hp.layers) - i)  # (d, n)
                    post = adapter.post_norm(model, layer)
                    if post is not None:  # the residual moves by norm(W k + dW k) - norm(W k)
                        w = adapter.as_matrix(adapter.edit_weight(model, layer)).float()  # (d_out, d_in)
                        resid = mlp_output_change(post, (w @ k.to(w.device)).T, resid.T).T  # (d, n)
                    cov = second_moments[layer].to(k.device)
                    kp = preserved.get(layer) if preserved is not None else None
                    if hp.algorithm == "alphaedit":
                        proj = nullspace_projection(cov, hp.nullspace_threshold)  # (d_in, d_in)
                        u, v = alphaedit_factors(resid, k, proj, kp, hp.alphaedit_l2, hp.norm_constraint)
                    else:
                        u, v = memit_factors(resid, k, cov, hp.cov_lambda, hp.norm_constraint, kp)
                    name = adapter.weight_name(layer)
                    factors[name] = (u.float(), v.float())  # (d_out, n), (d_in, n)
                    applied.append(Delta.from_factors({name: factors[name]}).apply(model, adapter))
            # keys of this batch on the edited model (what AlphaEdit preserves from later batches) are
            # the keys read above: each layer's edit comes after its read and is above the layers before
            with phase("keys", timings, device):
                final_keys, final_h = reader.keys, reader.residual()
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"out of memory computing {len(requests)} edits; lower the batch size") from exc
    finally:
        for a in reversed(applied):
            a.revert()
    z_err = (targets.z - final_h).norm(dim=1) / targets.h.norm(dim=1)  # (n,) relative miss at layer L
    meta = {
        "algorithm": hp.algorithm,
        "layers": json.dumps(list(hp.layers)),
        "n_edits": str(len(requests)),
        "request_ids": json.dumps([r.request_id for r in requests]),
        "hparams": json.dumps(hp.to_dict(), sort_keys=True),
        "z_rel_error_mean": f"{float(z_err.mean()):.4f}",
        "target_loss_mean": f"{float(targets.loss.nanmean()):.4f}",
        "z_norm_ratio_mean": f"{float((targets.z.norm(dim=1) / targets.h.norm(dim=1)).mean()):.4f}",
        "target_steps_mean": f"{float(targets.steps.float().mean()):.2f}",
    }
    return Delta.from_factors(factors, keys={layer: k for layer, k in final_keys.items()}, meta=meta)


def compute_delta(loaded_or_model, tokenizer, adapter: ArchitectureAdapter, requests: list[EditRequest],
                  hparams: EditHyperParams, second_moments: dict[int, torch.Tensor],
                  preserved: PreservedKeys | None = None, timings: dict | None = None,
                  check_stop: Callable[[], None] | None = None) -> Delta:
    """The delta of `requests` (steps 1-5); `check_stop` is called between steps and may raise to
    abandon it."""
    timings = {} if timings is None else timings
    model = loaded_or_model if isinstance(loaded_or_model, torch.nn.Module) else loaded_or_model.model
    _checked(model, adapter, requests, hparams, second_moments)
    t_all = time.perf_counter()
    batch = compute_batch_targets(model, tokenizer, adapter, requests, hparams, timings, check_stop)
    delta = solve_delta(model, tokenizer, adapter, batch, hparams, second_moments, preserved, timings, check_stop)
    timings["total_s"] = time.perf_counter() - t_all
    delta.meta["timings"] = json.dumps({k: round(v, 3) for k, v in timings.items()})
    return delta
