"""EditSequence: batches written into a model one after another (sequential MEMIT / AlphaEdit).

    for each batch b:
        delta_b = compute_delta(model edited by batches < b, keeping K_p)   (memit.py)
        W <- W + delta_b                                                     (in place)
        K_p <- K_p + w K_b K_b^T      (w = hp.preserved_weight: AlphaEdit 1, MEMIT edit_memory mu;
                                       plain MEMIT keeps none)

The evaluation runs, the lifelong benchmark and compaction's chained re-solve all edit this way;
apply does one step of it against the stored log (sync/apply.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .delta import Delta
from .hparams import EditHyperParams
from .memit import compute_delta
from .nullspace import PreservedKeys
from .request import EditRequest


class EditSequence:
    def __init__(self, loaded, hp: EditHyperParams, moments: dict[int, torch.Tensor]):
        self.loaded, self.hp, self.moments = loaded, hp, moments
        self.preserved = PreservedKeys.kept_by(hp, [])  # the keys of the batches edited so far (None: kept none)

    def edit(self, requests: list[EditRequest], also_keep: PreservedKeys | None = None,
             timings: dict | None = None, check_stop: Callable[[], None] | None = None) -> Delta:
        """Solve `requests` on the model as it is now, apply the delta in place and remember its keys.
        `also_keep`: keys this solve alone keeps too (the lifelong benchmark's protected facts)."""
        kept = self.preserved
        if also_keep is not None:
            kept = also_keep if kept is None else kept.plus(also_keep)
        loaded = self.loaded
        delta = compute_delta(loaded, loaded.tokenizer, loaded.adapter, requests, self.hp, self.moments,
                              preserved=kept, timings=timings, check_stop=check_stop)
        delta.apply(loaded.model, loaded.adapter)  # kept: the caller restores the weights it saved
        if self.preserved is not None:
            self.preserved.add_delta(delta, self.hp.preserved_weight)
        return delta
