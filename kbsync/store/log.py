"""A model version's delta log in SQL: which ordinary batches a log holds, through compactions
(a compaction batch names the batches it replaced in its hparams, `compacts`; one that rolled
batches back names them in `excluded`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from kbsync.store.models import Batch


def compacted(batch: Batch) -> list[int] | None:
    """The batches a compaction batch replaced (sync/compact.py), None for an ordinary batch."""
    ids = (batch.hparams or {}).get("compacts")
    return [int(b) for b in ids] if isinstance(ids, list) else None


def expand_compactions(s: Session, batch_ids: list[int]) -> list[int]:
    """The ordinary batches whose edits a log holds, in order: compactions replaced by what they compacted."""
    out: list[int] = []
    for bid in batch_ids:
        batch = s.get(Batch, bid)
        inner = compacted(batch) if batch is not None else None
        if inner is None:
            out.append(bid)
        else:
            excluded = set((batch.hparams or {}).get("excluded") or []) if batch is not None else set()
            out += [b for b in expand_compactions(s, inner) if b not in excluded]
    return out
