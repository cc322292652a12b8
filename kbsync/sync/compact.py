"""`kbsync compact`: replace the delta log by one base-relative delta, re-solved from the base.

A long log (one delta per daily batch, each computed on the model the batches before it
made) drifts: later batches overwrite earlier ones a little each time. Compaction re-solves
every active edit from the base weights in one mass edit (or a chain of `[editing]
compact_batch_size` edits, each keeping the earlier links' keys) and swaps the result in:

    plan       sync/resolve.py: the log's requests and the compaction's batch row
    before     checks of every active edit on the current model (the log being replaced)
    compute    sync/resolve.py: base ⊕ merged, the arithmetic of every load
    verdict    the same checks, each edit judged on its own (verification/verdict.py) and the
               regression gate (perplexity, known facts, retention) against the log it replaces;
               pass = at least as many edits hold as before and the gate passes
    publish    versions/transition.py: delta file, version, one transaction (the batch row, the
               re-checks, one `compact` event), the pointer; the version is base + [that batch]
    abandon    the previous log materialised again; the batch failed with the reason

The replaced batches keep their rows and delta files, so `kbsync rollback <compaction>` brings
the log it replaced back and the weights hash as before the compaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from kbsync.errors import EditError, RollbackError
from kbsync.logs import get_logger
from kbsync.store.events import record_event
from kbsync.store.models import Batch, ModelVersion
from kbsync.store.states import BatchState
from kbsync.store.transitions import move_batch
from kbsync.sync.resolve import plan_resolve, resolve
from kbsync.verification.checks import Check
from kbsync.verification.gate import GateVerdict
from kbsync.verification.recheck import holding, record_rechecks
from kbsync.verification.verifier import BeforeAnswers, Verifier
from kbsync.versions import registry
from kbsync.versions.transition import BatchTransition
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


@dataclass
class CompactReport:
    batch_id: int | None                 # the compaction's batch row (None: nothing to compact)
    replaced: list[int]                  # the batches of the log it replaces, in order
    n_edits: int
    ok: bool = False
    reason: str = ""
    weights_before: str = ""
    weights_after: str = ""
    efficacy_before: float | None = None  # share of the edits that hold (each on its own checks), the log
    efficacy_after: float | None = None   # ... after compaction
    shares: dict[str, float] = field(default_factory=dict)
    no_longer_hold: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _efficacy(checks: list[Check]) -> float | None:
    flags = [c.passed for c in checks if c.kind == "efficacy"]
    return sum(flags) / len(flags) if flags else None


def compact(writer: ModelWriter, *, batch_size: int | None = None, lock_wait_s: float = 0.0) -> CompactReport:
    """Compact the current model's delta log under the writer lock (see the module docstring)."""
    with writer.locked(lock_wait_s):
        with writer.db.session() as s:
            current = registry.current_version(s, writer.model_key)
            log_ids = list(current.batch_ids) if current else []
        if len(log_ids) < 1:
            raise RollbackError("nothing to compact: the model has no applied batch; `kbsync apply` first")
        writer.context().moments(check_stop=writer.stop.check_outside_batch)  # C_l of the base weights
        writer.open_current()
        return compact_open(writer, batch_size=batch_size)


def compact_if_long(writer: ModelWriter, *, lock_wait_s: float = 0.0) -> CompactReport | None:
    """[editing] compact_after: compact when the log is longer; a failed compaction leaves the log as
    it was (its batch row and event say why) and is returned, not raised."""
    limit = writer.settings.editing.compact_after
    if not limit or writer.stop.requested:
        return None
    with writer.db.session() as s:
        current = registry.current_version(s, writer.model_key)
        if current is None or len(current.batch_ids) <= limit:
            return None
    try:
        return compact(writer, lock_wait_s=lock_wait_s)
    except (EditError, RollbackError) as exc:
        log.warning("compaction_skipped", reason=str(exc))
        return None


def compact_open(writer: ModelWriter, *, batch_size: int | None = None) -> CompactReport:
    """Compaction with the writer's lock held and its current version open."""
    t0 = time.perf_counter()
    store, settings = writer.context().store, writer.settings
    plan = plan_resolve(writer, chunk_size=batch_size)
    report = CompactReport(plan.batch_id, plan.replaced, len(plan.edits), weights_before=store.weights_sha256())
    log.info("compaction_started", batch=plan.batch_id, replaces=plan.replaced, n_edits=len(plan.edits))
    verifier, ids = Verifier(writer), list(plan.owner)
    with BatchTransition(writer, plan.batch_id) as t:
        verifier.prepare()  # the gate's figures of the current version: the log being replaced
        before = verifier.check_edits(plan.tests)
        held_before = {rid for rid, v in holding(before.checks, settings.verify).items() if v.ok}
        merged = resolve(writer, plan)
        store.materialise([(plan.batch_id, merged)])
        after = verifier.check_edits(plan.tests, BeforeAnswers(list(t.before)))
        held_after = {rid for rid, v in holding(after.checks, settings.verify).items() if v.ok}
        report.efficacy_before, report.efficacy_after = _share(held_before, ids), _share(held_after, ids)
        report.shares = after.shares
        gate = verifier.gate_check(ids)
        harms = verifier.harms(plan.tests, after.checks, held_after) + (gate.harms if gate is not None else [])
        reason = _refusal(held_before, held_after, gate, harms, settings.verify.on_damage)
        report.reason = reason or ("compacted: " + (gate.reason if gate is not None else "regression gate off"))
        if reason:
            report.seconds = time.perf_counter() - t0

            def refused(s: Session) -> None:
                verifier.save_gate(s, plan.batch_id, gate, None)
                _event(s, writer, report)

            t.abandon(reason, requeue=False, metrics=_metrics(report), record=refused)
            log.warning("compaction_failed", batch=plan.batch_id, reason=reason)
            return report

        def record(s: Session, version: ModelVersion) -> None:
            report.seconds = time.perf_counter() - t0
            batch = s.get(Batch, plan.batch_id)
            assert batch is not None
            batch.timings, batch.metrics = {"total_s": round(report.seconds, 3)}, _metrics(report)
            move_batch(s, batch, BatchState.APPLIED, "compacted delta in the log, version written")
            move_batch(s, batch, BatchState.VERIFIED, report.reason)
            report.no_longer_hold = record_rechecks(s, after.checks, plan.owner, "compact", version.id,
                                                    f"no longer holds after compaction (batch {plan.batch_id})",
                                                    writer.run_id, settings.verify)
            verifier.save_gate(s, plan.batch_id, gate, version.id)
            verifier.save_damage(s, plan.batch_id, harms, version.id, writer.run_id)
            report.ok, report.weights_after = True, t.weights_sha256
            _event(s, writer, report, delta_sha256=t.delta_sha256)

        t.publish(f"c{plan.batch_id:06d}", f"compaction of batches {plan.replaced}", delta=merged, record=record)
    log.info("compacted", batch=plan.batch_id, replaced=plan.replaced, n_edits=report.n_edits,
             held_before=report.efficacy_before, held_after=report.efficacy_after)
    return report


def _share(held: set[int], ids: list[int]) -> float | None:
    return len(held) / len(ids) if ids else None


def _refusal(held_before: set[int], held_after: set[int], gate: GateVerdict | None, harms: list, on_damage: str) -> str:
    """Why the compaction may not replace the log ('' when it may): it holds fewer edits, the
    regression gate refuses it, or ([verify] on_damage = rollback) it broke facts the log kept."""
    if len(held_after) < len(held_before):
        return (f"compaction holds fewer edits than the log it replaces ({len(held_after)} < {len(held_before)}, "
                "each judged on its own checks)")
    if gate is not None and not gate.ok:
        return gate.reason
    if harms and on_damage == "rollback":
        return f"damage: {len(harms)} fact(s) right on the log are wrong after compaction; [verify] on_damage = rollback"
    return ""


def _metrics(report: CompactReport) -> dict:
    return report.shares | {"efficacy_before": report.efficacy_before, "efficacy_after": report.efficacy_after}


def _event(s: Session, writer: ModelWriter, report: CompactReport, **extra: object) -> None:
    figures: dict[str, object] = {"weights_before": report.weights_before, "weights_after": report.weights_after,
                                  "shares": report.shares, "no_longer_hold": report.no_longer_hold} \
        if report.ok else {"reason": report.reason}
    record_event(s, "compact", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=report.batch_id,
                 ok=report.ok, compacts=report.replaced, n_edits=report.n_edits,
                 efficacy_before=report.efficacy_before, efficacy_after=report.efficacy_after, **figures, **extra)


def compaction_error(report: CompactReport) -> EditError:
    return EditError(f"compaction batch {report.batch_id} failed ({report.reason}); the delta log is unchanged")
