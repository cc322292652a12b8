"""Re-solving a delta log from the base: the plan and compute steps that `kbsync compact` and the
rollback of a batch a compaction holds share (a compaction without that batch is what undoing it
means). Neither flow calls the other; both call this.

    plan_resolve(writer, exclude)   SQL: the current version's batches, expanded through earlier
                                    compactions (`expand_compactions`), their applied and
                                    verified requests in log order (less `exclude`), what each is
                                    checked on, and the new compaction batch's row (its hparams
                                    name the batches it `compacts`; no request changes batch)
    resolve(writer, plan)           the base weights; each chunk solved on the model the chunks
                                    before it made (editing/sequence.py); merged = sum_j U_j V_j^T,
                                    one base-relative delta. The live model is left at the base.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from kbsync.editing.delta import Delta
from kbsync.editing.request import EditRequest
from kbsync.editing.sequence import EditSequence
from kbsync.errors import RollbackError
from kbsync.store.log import expand_compactions
from kbsync.store.models import Batch, EditRequestRow
from kbsync.store.states import RequestState
from kbsync.sync.requests import edit_requests
from kbsync.verification.checks import EditUnderTest
from kbsync.verification.held_out import held_out_for
from kbsync.verification.neighbours import edits_under_test
from kbsync.versions.transition import crashing_in
from kbsync.versions.writer import ModelWriter

LIVE = (RequestState.APPLIED.value, RequestState.VERIFIED.value)


@dataclass
class ResolvePlan:
    batch_id: int                  # the new compaction batch
    replaced: list[int]            # the batches of the log it replaces, in order
    edits: list[EditRequest]
    tests: list[EditUnderTest]
    owner: dict[int, int]          # request id -> the ordinary batch it was applied in
    chunk_size: int


def plan_resolve(writer: ModelWriter, *, exclude_batches: tuple[int, ...] = (),
                 chunk_size: int | None = None) -> ResolvePlan:
    ctx, settings = writer.context(), writer.settings
    size = chunk_size or settings.editing.compact_batch_size or settings.editing.batch_size
    with writer.db.session() as s:
        replaced = [b for b, _ in ctx.store.active]
        originals = expand_compactions(s, replaced)
        rank = {b: i for i, b in enumerate(originals)}
        rows = sorted(s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id.in_(originals),
                                                             EditRequestRow.state.in_(LIVE))),
                      key=lambda r: (rank[r.batch_id or 0], r.id))
        rows = [r for r in rows if r.batch_id not in exclude_batches]
        if not rows:
            raise RollbackError(f"nothing to compact: batches {originals} hold no applied or verified edit"
                                + (f" besides batches {list(exclude_batches)}" if exclude_batches else ""))
        edits = edit_requests(ctx, rows)
        tests = edits_under_test(s, rows, settings.verify.neighbours, held_out=held_out_for(ctx))
        hp = ctx.hparams
        batch = Batch(model_key=ctx.model_key, algorithm=hp.algorithm,
                      hparams=hp.to_dict() | {"compacts": replaced, "chunk_size": size,
                                              "excluded": list(exclude_batches)},
                      n_edits=len(edits), version_before_id=writer.version_id, worker=writer.worker,
                      run_id=writer.run_id)
        s.add(batch)
        s.flush()
        return ResolvePlan(batch.id, replaced, edits, tests, {r.id: r.batch_id or 0 for r in rows}, size)


def resolve(writer: ModelWriter, plan: ResolvePlan) -> Delta:
    """One base-relative delta holding every planned edit (see the module docstring)."""
    ctx = writer.context()
    ctx.store.materialise([])  # the base weights
    sequence = EditSequence(ctx.loaded, ctx.hparams, ctx.moments())
    chunks: list[Delta] = []
    check_stop = crashing_in("targets", writer.stop.check_in_batch)  # the kill tests' point mid-computation
    for i in range(0, len(plan.edits), plan.chunk_size):
        writer.stop.check_in_batch()
        chunks.append(sequence.edit(plan.edits[i:i + plan.chunk_size], check_stop=check_stop))
    return Delta.merged(chunks, meta={"algorithm": ctx.hparams.algorithm, "compacts": str(plan.replaced),
                                      "n_edits": str(len(plan.edits))})
