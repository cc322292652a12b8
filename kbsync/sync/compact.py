"""`kbsync compact`: replace the delta log by one base-relative delta, re-solved from the base.

A long log (one delta per daily batch, each computed on the model the batches before it
made) drifts: later batches overwrite earlier ones a little each time. Compaction re-solves
every active edit from the base weights in one mass edit (or a chain of `[editing]
compact_batch_size` edits, AlphaEdit preserving the earlier links' keys) and swaps the result in:

    plan         SQL: the current version's batches, expanded through earlier compactions
                 (`registry.expand_compactions`), and their applied/verified requests, in log order
    before       checks of every active edit on the current model (the log being replaced)
    re-solve     base weights; compute_delta per chunk on the model the chunks before it made;
                 merged = Delta.merged(chunks): dW_l = sum_j U_j V_j^T, one base-relative delta
    after        materialise base ⊕ merged; the same checks; pass = [verify] thresholds hold and
                 at least as many edits win on their prompt as before
    commit       delta file, version directory, one transaction: a batch row (its hparams name
                 the batches it `compacts`; no request changes batch), `promote` (the version is
                 base + [that batch]), checks, one `compact` event; then the `current` pointer
    fail         the previous log is materialised again, the batch failed with the reason

The replaced batches keep their rows and delta files, so `kbsync rollback <compaction>` brings
the log it replaced back (rollback.py) and the weights hash as before the compaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import select

from kbsync.editing.delta import Delta
from kbsync.editing.request import EditRequest
from kbsync.editing.sequence import EditSequence
from kbsync.errors import EditError, RollbackError
from kbsync.logs import get_logger
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch
from kbsync.sync.drift import record_rechecks
from kbsync.verification.checks import Check, edits_under_test, judge, run_checks, shares
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)

LIVE = (RequestState.APPLIED.value, RequestState.VERIFIED.value)


@dataclass
class CompactReport:
    batch_id: int | None                 # the compaction's batch row (None: nothing to compact)
    replaced: list[int]                  # the batches of the log it replaces, in order
    n_edits: int
    ok: bool = False
    reason: str = ""
    weights_before: str = ""
    weights_after: str = ""
    efficacy_before: float | None = None  # share of the edits winning on their prompt, sequential log
    efficacy_after: float | None = None   # ... after compaction
    shares: dict[str, float] = field(default_factory=dict)
    no_longer_hold: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _efficacy(checks: list[Check]) -> float | None:
    flags = [c.passed for c in checks if c.kind == "efficacy"]
    return sum(flags) / len(flags) if flags else None


def compact(writer: ModelWriter, *, batch_size: int | None = None, exclude_batches: tuple[int, ...] = (),
            lock_wait_s: float = 0.0) -> CompactReport:
    """Compact the current model's delta log under the writer lock (see the module docstring)."""
    with writer.locked(lock_wait_s):
        with writer.db.session() as s:
            current = registry.current_version(s, writer.model_key)
            log_ids = list(current.batch_ids) if current else []
        if len(log_ids) < 1:
            raise RollbackError("nothing to compact: the model has no applied batch; `kbsync apply` first")
        ctx = writer.context()
        ctx.moments(check_stop=writer.stop.check_outside_batch)  # C_l of the base weights
        writer.open_current()
        return compact_open(writer, batch_size=batch_size, exclude_batches=exclude_batches)


def compact_open(writer: ModelWriter, *, batch_size: int | None = None,
                 exclude_batches: tuple[int, ...] = ()) -> CompactReport:
    """Compaction with the writer's lock held and its current version open (apply's auto-compaction)."""
    t0 = time.perf_counter()
    ctx = writer.context()
    store, hp, settings = ctx.store, ctx.hparams, writer.settings
    model, tok = ctx.loaded.model, ctx.loaded.tokenizer
    previous = list(store.active)
    size = batch_size or settings.editing.compact_batch_size or settings.editing.batch_size
    with writer.db.session() as s:
        replaced = [b for b, _ in previous]
        originals = registry.expand_compactions(s, replaced)
        rank = {b: i for i, b in enumerate(originals)}
        rows = sorted(s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id.in_(originals),
                                                             EditRequestRow.state.in_(LIVE))),
                      key=lambda r: (rank[r.batch_id or 0], r.id))
        rows = [r for r in rows if r.batch_id not in exclude_batches]
        owner = {r.id: r.batch_id or 0 for r in rows}
        edits = [EditRequest(prompt=r.prompt, subject=r.subject_label, target_new=r.target_new,
                             target_old=r.target_old, request_id=r.id, paraphrases=tuple(r.paraphrases)) for r in rows]
        if not edits:
            raise RollbackError(f"nothing to compact: batches {originals} hold no applied or verified edit"
                                + (f" besides batches {list(exclude_batches)}" if exclude_batches else ""))
        tests = edits_under_test(s, rows, settings.verify.neighbours)
        batch = Batch(model_key=ctx.model_key, algorithm=hp.algorithm,
                      hparams=hp.to_dict() | {"compacts": replaced, "chunk_size": size,
                                              "excluded": list(exclude_batches)},
                      n_edits=len(edits), version_before_id=writer.version_id, worker=writer.worker,
                      run_id=writer.run_id)
        s.add(batch)
        s.flush()
        batch_id = batch.id
        weights_before = store.weights_sha256()
    report = CompactReport(batch_id, replaced, len(edits), weights_before=weights_before)
    log.info("compaction_started", batch=batch_id, replaces=replaced, n_edits=len(edits))
    try:
        before = run_checks(model, tok, tests, settings.probe.max_new_tokens) if tests else []
        report.efficacy_before = _efficacy(before)
        store.materialise([])  # the base weights
        sequence = EditSequence(ctx.loaded, hp, ctx.moments())  # each chunk solved on top of those before
        chunks: list[Delta] = []
        for i in range(0, len(edits), size):
            writer.stop.check_in_batch()
            chunks.append(sequence.edit(edits[i:i + size], check_stop=writer.stop.check_in_batch))
        merged = Delta.merged(chunks, meta={"algorithm": hp.algorithm, "compacts": str(replaced),
                                            "n_edits": str(len(edits))})
        store.materialise([(batch_id, merged)])  # base ⊕ merged, the arithmetic of every load
        after = run_checks(model, tok, tests, settings.probe.max_new_tokens) if tests else []
    except BaseException as exc:
        store.materialise(previous)
        _fail(writer, report, f"not compacted: {type(exc).__name__}: {exc}", t0)
        raise
    report.efficacy_after = _efficacy(after)
    report.shares = shares(after)
    ok, reason = judge(report.shares, settings.verify)
    if ok and (report.efficacy_after or 0.0) < (report.efficacy_before or 0.0):
        ok, reason = False, (f"compaction holds fewer edits than the log it replaces (efficacy "
                             f"{report.efficacy_after:.2f} < {report.efficacy_before:.2f})")
    if not ok:
        store.materialise(previous)
        _fail(writer, report, reason, t0)
        return report
    try:
        _commit(writer, report, merged, after, owner, reason, t0)
    except BaseException:
        if not (store.active and store.active[-1][0] == batch_id and writer.version_id is not None
                and _committed(writer, batch_id)):
            store.materialise(previous)
            _fail(writer, report, "not compacted: the commit did not complete", t0)
        raise
    return report


def _committed(writer: ModelWriter, batch_id: int) -> bool:
    with writer.db.session() as s:
        row = s.get(Batch, batch_id)
        return row is not None and row.state == BatchState.VERIFIED.value


def _commit(writer: ModelWriter, report: CompactReport, merged: Delta, checks: list[Check], owner: dict[int, int],
            reason: str, t0: float) -> None:
    store = writer.context().store
    assert report.batch_id is not None
    delta_path = store.delta_path(report.batch_id)
    delta_sha = merged.save(delta_path)
    report.weights_after = weights = store.weights_sha256()
    path = store.write_version(f"c{report.batch_id:06d}-{weights[:12]}")
    with writer.db.session() as s:
        version = registry.promote(s, writer.model_key, batch_ids=[report.batch_id], weights_sha256=weights,
                                   path=path, reason=f"compaction of batches {report.replaced}")
        batch = s.get(Batch, report.batch_id)
        assert batch is not None
        batch.version_after_id = version.id
        registry.record_delta(batch, merged, delta_path, delta_sha)
        report.seconds = time.perf_counter() - t0
        batch.timings = {"total_s": round(report.seconds, 3)}
        batch.metrics = report.shares | {"efficacy_before": report.efficacy_before,
                                         "efficacy_after": report.efficacy_after}
        move_batch(s, batch, BatchState.APPLIED, "compacted delta in the log, version written")
        move_batch(s, batch, BatchState.VERIFIED, reason)
        report.no_longer_hold = record_rechecks(s, checks, owner, "compact", version.id,
                                                f"no longer holds after compaction (batch {report.batch_id})",
                                                writer.run_id)
        record_event(s, "compact", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=report.batch_id,
                     compacts=report.replaced, n_edits=report.n_edits, weights_before=report.weights_before,
                     weights_after=weights, delta_sha256=delta_sha, efficacy_before=report.efficacy_before,
                     efficacy_after=report.efficacy_after, shares=report.shares,
                     no_longer_hold=report.no_longer_hold, ok=True)
        writer.version_id = version.id
    store.set_current(path)
    report.ok, report.reason = True, reason
    log.info("compacted", batch=report.batch_id, replaced=report.replaced, n_edits=report.n_edits,
             efficacy_before=report.efficacy_before, efficacy_after=report.efficacy_after)


def _fail(writer: ModelWriter, report: CompactReport, reason: str, t0: float) -> None:
    report.ok, report.reason, report.seconds = False, reason, time.perf_counter() - t0
    with writer.db.session() as s:
        batch = s.get(Batch, report.batch_id)
        assert batch is not None
        batch.metrics = report.shares | {"efficacy_before": report.efficacy_before,
                                         "efficacy_after": report.efficacy_after}
        move_batch(s, batch, BatchState.FAILED, reason)
        record_event(s, "compact", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=report.batch_id,
                     compacts=report.replaced, n_edits=report.n_edits, ok=False, reason=reason,
                     efficacy_before=report.efficacy_before, efficacy_after=report.efficacy_after)
    log.warning("compaction_failed", batch=report.batch_id, reason=reason)


def compaction_error(report: CompactReport) -> EditError:
    return EditError(f"compaction batch {report.batch_id} failed ({report.reason}); the delta log is unchanged")
