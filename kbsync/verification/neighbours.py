"""Which facts an edit is most likely to move: its neighbours at risk.

MEMIT writes each edit as a value for the edited subject's *key* (the MLP input at the
subject's last token, DESIGN §3.2) at every edited layer; a fact whose subject has a key close
to the edited one is read through nearly the same rows of ΔW and moves with it (other glaciers
when one glacier's continent is edited). So the neighbours that verification checks are, for a
share [verify] at_risk_share of them, the facts of the edit's relation whose subject keys are
closest (cosine, averaged over the edited layers) to the edited subject's, computed on the model
before the edit; the rest stay a random sample, so damage far from the edit can still be seen.

    KeySimilarity(model, ...)(edits, candidates)  (e, c) cosine of keys, one batched pass
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kbsync.editing.keys import compute_keys
from kbsync.editing.request import EditRequest
from kbsync.errors import TokenizationError
from kbsync.logs import get_logger
from kbsync.model.adapters import ArchitectureAdapter

log = get_logger(__name__)

Labelled = tuple[str, str]   # (subject label, prompt with the label in it)
Similarity = Callable[[list[Labelled], list[Labelled]], torch.Tensor | None]


@dataclass
class KeySimilarity:
    """Cosine similarity of subject keys at the edited layers, on the model as it is now."""

    model: torch.nn.Module
    tokenizer: Any
    adapter: ArchitectureAdapter
    layers: list[int]
    batch_rows: int = 256

    def __call__(self, edits: list[Labelled], candidates: list[Labelled]) -> torch.Tensor | None:
        """(len(edits), len(candidates)) mean cosine over the layers; None when a subject cannot be
        found in its prompt (the caller then falls back to a random choice)."""
        if not edits or not candidates:
            return None
        requests = [EditRequest(prompt=prompt, subject=label, target_new="-") for label, prompt in edits + candidates]
        try:
            keys, _ = compute_keys(self.model, self.tokenizer, self.adapter, requests, ["{}"], self.layers,
                                   self.layers[-1], self.batch_rows)
        except TokenizationError as exc:
            log.warning("at_risk_keys_skipped", reason=str(exc))
            return None
        n = len(edits)
        total = torch.zeros(n, len(candidates))
        for k in keys.values():  # (d_in, n + c)
            unit = torch.nn.functional.normalize(k.T.float().cpu(), dim=1)
            total += unit[:n] @ unit[n:].T
        return total / len(keys)


def key_similarity(ctx: Any) -> KeySimilarity:
    """The similarity of an editing context (`sync.engine.EditingContext`): its model and layers."""
    loaded = ctx.loaded
    return KeySimilarity(loaded.model, loaded.tokenizer, loaded.adapter, list(ctx.hparams.layers),
                         ctx.hparams.batch_rows)


def bounded(subjects: list[str], limit: int) -> set[str]:
    """A fixed sample of at most `limit` subjects (by hash, so the same in every process)."""
    if len(subjects) <= limit:
        return set(subjects)
    return set(sorted(subjects, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:limit])


def split_counts(limit: int, share: float) -> tuple[int, int]:
    """(at risk, random) neighbours of `limit` for an at-risk share."""
    risky = min(limit, round(limit * share))
    return risky, limit - risky
