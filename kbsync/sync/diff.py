"""`kbsync diff`: read → compare with the snapshot → probe → queue the disagreements.

    facts = a complete read of the KB (or nothing is written): current values as of T
            (sources/timeline.py), minus facts with a label longer than [kb] max_label_chars
    held  = changed facts whose new state has not yet held for [kb] settle_s (not probed)
    probe = new + changed facts (+ a rotating sample of unchanged ones; every fact with --full)
    queue = every probed fact the model gets wrong (superseding older pending values); an
            answer naming an ended (stale) value is wrong even when it outscores nothing
All of it is committed in one transaction: the snapshot, the probes, the queue, an event.
Memory stays bounded by a chunk whatever the KB's size: the source streams, the read is spilled
to a scratch file (staging.py), and each chunk is compared against the kb_facts rows of its own
keys and written with bulk statements. --snapshot-only records the read without probing.
A queued request's target_old is the most recently ended KB value when there is one
(target_old_source "kb"), else the model's answer ("model").
A fact whose KB value is now "none" (a preferred "no value": the office is vacant) has no
objects: it is not probed and teaches nothing; its pending requests are withdrawn, and when it
is new or changed it is reported for review (`review` rows, a `kb_no_value` event naming the
former holders): whether the model should unlearn the old holder is a person's call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from kbsync.errors import ConfigError, SourceError, TokenizationError
from kbsync.logs import get_logger
from kbsync.model.loading import LoadedModel
from kbsync.model.probe import ProbeItem, ProbeResult, answer_matches, probe
from kbsync.serving.served_probe import ServedModel
from kbsync.sources.catalogue import Catalogue, Relation
from kbsync.sources.fact import Fact, KnowledgeSource
from kbsync.store import holds, snapshot
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.models import EditRequestRow, Probe, utcnow
from kbsync.store.queue import enqueue_edit, withdraw_pending, would_enqueue
from kbsync.sync.staging import CHANGED, NEW, Staging
from kbsync.verification import damage

log = get_logger(__name__)


@dataclass
class DiffRow:
    subject: str
    subject_label: str
    relation: str
    kb_answer: str
    model_answer: str
    status: str      # new | changed | unchanged
    action: str      # agrees | queued | superseded | already_queued | in_flight | damaged | held | review;
                     # a dry run: would_queue | would_supersede in place of queued | superseded
    request_id: int | None = None
    damaged_by: int | None = None   # the live batch that broke a fact the model had right (sync/damage.py)
    held: str = ""                  # why a disagreement is not queued: what its hold waits for (store/holds.py)


@dataclass
class DiffReport:
    read: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    probed: int = 0
    agree: int = 0
    queued: int = 0         # a dry run: what it would queue
    superseded: int = 0
    settling: int = 0  # changed facts held back by [kb] settle_s
    reverted: int = 0  # settling changes that went back to the stored state: never queued
    stale_answers: int = 0  # probed answers that named an ended KB value
    damaged: int = 0  # facts right at their last probe, wrong now, blamed on a live batch: not queued
    held: int = 0     # disagreements not queued: a hold waits for a change (store/holds.py)
    review: int = 0   # facts that became "none" (a preferred "no value"): nothing taught, a person decides
    skipped_too_long: int = 0  # facts with a label or alias over [kb] max_label_chars
    shrink: int = 0   # a suspect shrink accepted (--accept-shrink): the facts the snapshot held before
    forgotten: int = 0  # ... the facts the read did not see, dropped from the snapshot
    seconds_read: float = 0.0
    seconds_compare: float = 0.0
    seconds_probe: float = 0.0
    seconds_write: float = 0.0
    dry_run: bool = False
    rows: list[DiffRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def answers_of(fact: Fact) -> list[str]:
    """Labels and aliases of every acceptable object, labels first."""
    out: list[str] = []
    for obj in fact.objects:
        for text in (fact.object_labels.get(obj, obj), *fact.object_aliases.get(obj, ())):
            if text and text not in out:
                out.append(text)
    return out


def kb_answer(fact: Fact) -> tuple[str, str]:
    """(object id, label) the model should answer: the fact's target (for a multi-valued
    relation, the current value that started last), else the first object that has a label."""
    for obj in (fact.target, *fact.objects):
        if obj is not None and fact.object_labels.get(obj):
            return obj, fact.object_labels[obj]
    return fact.objects[0], fact.objects[0]


def stale_answers_of(fact: Fact) -> list[str]:
    """Labels and aliases of the fact's ended (stale) values, most recently ended first."""
    current = set(answers_of(fact))
    out: list[str] = []
    for obj in fact.stale:
        for text in (fact.object_labels.get(obj, ""), *fact.object_aliases.get(obj, ())):
            if text and text not in out and text not in current:
                out.append(text)
    return out


def names_stale(fact: Fact, result: ProbeResult) -> bool:
    """The answer names an ended value (and no longer current label): it disagrees."""
    stale = answer_matches(result.answer, stale_answers_of(fact))
    if stale is None:
        return False
    current = answer_matches(result.answer, answers_of(fact))
    return current is None or len(stale) > len(current)


def stale_target(fact: Fact) -> str | None:
    """The label of the most recently ended KB value, if the fact has one."""
    for obj in fact.stale:
        if fact.object_labels.get(obj):
            return fact.object_labels[obj]
    return None


def too_long(fact: Fact, max_chars: int) -> bool:
    return any(len(text) > max_chars for text in fact.texts())


def finite(x: float) -> float:
    """-inf (no candidate) stored as a very low score: not every database stores infinities."""
    return max(x, -1e9)


def check_labels(tokenizer, facts: Sequence[Fact]) -> None:  # type: ignore[no-untyped-def]
    for fact in facts:
        _, label = kb_answer(fact)
        if not label.strip() or not tokenizer(" " + label.strip(), add_special_tokens=False)["input_ids"]:
            raise TokenizationError(f"the KB label {label!r} of {fact.subject} {fact.relation} tokenises to nothing; "
                                    "fix the label in the KB (or drop the fact)")
        if not fact.subject_label.strip():
            raise TokenizationError(f"{fact.subject} has no label in the configured language; "
                                    "add an rdfs:label or change [kb] language")


@dataclass(frozen=True)
class DiffOptions:
    """What one diff run reads, probes and writes: `kbsync diff`'s flags and the settings it uses."""

    relations: Sequence[str]
    subjects: Sequence[str] | None = None   # only these subjects (--subject)
    full: bool = False                      # probe every fact, not only new and changed ones (--full)
    limit: int | None = None                # the first N facts read, by (relation, subject) (--limit)
    dry_run: bool = False                   # show what would be queued; write nothing
    accept_shrink: bool = False             # a read of far fewer facts than the snapshot is taken as it is
    snapshot_only: bool = False             # record the read as the snapshot, probe and queue nothing
    scope_limited: bool = False             # --relation: the watermark may not move
    sample_unchanged: int = 0               # [probe] sample_unchanged: unchanged facts probed again
    max_new_tokens: int = 8
    batch_size: int = 32
    incremental_key: str | None = None      # where the SPARQL read's watermark is kept (None: read whole)
    settle_s: int = 0                       # [kb] settle_s
    clock: datetime | None = None           # the moment settling is counted at ([kb] as_of; default now)
    max_label_chars: int = 250              # [kb] max_label_chars
    on_damage: str = "flag"                 # [verify] on_damage: a damaged fact is flagged unless "requeue"
    chunk_size: int = 1000                  # facts compared, probed and written at a time
    work_dir: Path | None = None            # where the read is spilled (staging.py)
    run_id: str = ""
    config_hash: str = ""


def run_diff(db: Database, source: KnowledgeSource, catalogue: Catalogue,
             load_model: Callable[[], LoadedModel | ServedModel],
             options: DiffOptions, progress: Callable[[int, int], None] | None = None) -> DiffReport:
    """Read, compare with the snapshot, probe, queue and record (see the module docstring);
    `options` says what (`DiffOptions`), `progress(done, total)` follows the probing."""
    o = options
    if o.snapshot_only and (o.dry_run or o.full):
        raise ConfigError("--snapshot-only probes nothing: it cannot be combined with --dry-run or --full")
    report = DiffReport(dry_run=o.dry_run)
    clock = o.clock or datetime.now(UTC)
    rels = [catalogue[r] for r in o.relations]            # CatalogueError for an unknown id
    since = last_clock = None
    if o.incremental_key and not o.full:
        with db.session() as s:
            last = snapshot.get_value(s, o.incremental_key)
            last_as_of = snapshot.get_value(s, o.incremental_key + ":as_of")
        since = datetime.fromisoformat(last) if last else None   # the source subtracts its overlap window
        last_clock = datetime.fromisoformat(last_as_of) if last_as_of else since
    started = datetime.now(UTC)
    with Staging(o.work_dir, o.chunk_size) as stage:
        t0 = time.perf_counter()
        _read_into(stage, source, [r.id for r in rels], o.subjects or None, since, o.max_label_chars, report)
        if since is not None:  # subjects not modified since, whose current values may still change
            with db.session() as s:
                due = set(snapshot.settling_subjects(s)) | set(snapshot.due_subjects(s, last_clock or since, clock))
            again = stage.missing_subjects(due)
            if again:  # a settling change, or an end / start time that passed since the last read
                _read_into(stage, source, [r.id for r in rels], again, None, o.max_label_chars, report)
        total = stage.count()
        # The watermark may only move over what this run read in full: not past a --limit cut, nor
        # for a run limited to some subjects or relations (the facts it skipped would be skipped for good).
        read_in_full = not (o.scope_limited or o.subjects) and (o.limit is None or total <= o.limit)
        if o.limit is not None and total > o.limit:
            stage.keep_first(o.limit)
            total = o.limit
        report.seconds_read = time.perf_counter() - t0
        report.read = total
        if since is None:   # a whole read (an incremental one returns the changes only): did the KB shrink?
            _check_shrink(db, o, [r.id for r in rels], total, report)

        t0 = time.perf_counter()
        _compare(db, stage, report, full=o.full, snapshot_only=o.snapshot_only, sample_unchanged=o.sample_unchanged,
                 clock=clock, settle_s=o.settle_s)
        report.seconds_compare = time.perf_counter() - t0
        by_id = {r.id: r for r in rels}
        model_key, version_id = "", None  # nothing is queued without a probe
        if not o.snapshot_only:
            t0 = time.perf_counter()
            model_key, version_id = _probe(stage, load_model, by_id, o.max_new_tokens, o.batch_size, progress)
            report.seconds_probe = time.perf_counter() - t0
            report.probed = stage.probe_count()

        t0 = time.perf_counter()
        with db.session() as s:
            if o.dry_run:
                for rows in stage.chunks():
                    _review_vacant(s, [(f, status) for f, status, _ in rows], report, o.run_id, "", True)
            for chunk in stage.to_probe():
                _queue(s, chunk, by_id, report, o.dry_run, o.run_id, model_key, o.on_damage,
                       holds.now_for(s, model_key, o.config_hash))
            if o.dry_run:
                s.rollback()
                return report
            for chunk in stage.to_probe():
                s.add_all(Probe(run_id=o.run_id, subject=fact.subject, relation=fact.relation,
                                prompt=by_id[fact.relation].prompt_for(fact.subject_label), answer=result.answer,
                                agrees=result.agrees, kb_logprob=finite(result.kb_logprob),
                                answer_logprob=finite(result.answer_logprob), content_hash=fact.content_hash(),
                                model_version_id=version_id)   # the version that answered (None: the base)
                          for fact, _, result in chunk if result is not None)
                s.flush()
            now = utcnow()
            for rows in stage.chunks():
                _review_vacant(s, [(f, status) for f, status, _ in rows], report, o.run_id, o.config_hash,
                               o.snapshot_only)
                snapshot.save(s, [f for f, _, _ in rows], {(f.subject, f.relation) for f, _, probed in rows if probed},
                              held=[f for f, status, _ in rows if status == "held"], clock=clock, now=now)
            if report.shrink and read_in_full:   # accepted: what the read did not see left the KB
                report.forgotten = snapshot.forget_unseen(s, [r.id for r in rels], o.subjects, now)
                log.warning("kb.shrink_accepted", read=report.read, snapshot=report.shrink, forgotten=report.forgotten)
            if o.incremental_key and read_in_full:
                snapshot.set_value(s, o.incremental_key, started.isoformat())
                snapshot.set_value(s, o.incremental_key + ":as_of", clock.isoformat())  # what "current" meant
            record_event(s, "diff", run_id=o.run_id, config_hash=o.config_hash, read=report.read, probed=report.probed,
                         agree=report.agree, queued=report.queued, superseded=report.superseded,
                         new=report.new, changed=report.changed, settling=report.settling,
                         reverted=report.reverted, skipped_too_long=report.skipped_too_long,
                         damaged=report.damaged, held=report.held, snapshot_only=o.snapshot_only,
                         shrink_accepted=report.shrink or None, forgotten=report.forgotten)
        report.seconds_write = time.perf_counter() - t0
    log.info("diff_done", read=report.read, probed=report.probed, queued=report.queued,
             settling=report.settling, snapshot_only=o.snapshot_only)
    return report


SHRINK_SUSPECT = 0.5   # a whole read of less than half the facts the snapshot holds is suspect


def _check_shrink(db: Database, o: DiffOptions, relations: list[str], total: int, report: DiffReport) -> None:
    """A read of far fewer facts than the snapshot holds (0 of 7, say) is more likely an outage or a
    wrong file than a KB that lost them: refuse it before the model is loaded, unless accepted."""
    with db.session() as s:
        stored = snapshot.count_in_scope(s, relations, o.subjects)
    expected = min(stored, o.limit) if o.limit is not None else stored
    if not expected or total >= expected * SHRINK_SUSPECT:
        return
    if not o.accept_shrink:
        raise SourceError(f"the KB read returned {total} facts where the snapshot holds {stored} of these relations: "
                          "an outage, a wrong [kb] files or endpoint? Nothing was written and the model was not "
                          "loaded; if the KB really lost them, run `kbsync diff --accept-shrink` once")
    log.warning("kb.shrink", read=total, snapshot=stored)
    report.shrink = stored


def _read_into(stage: Staging, source: KnowledgeSource, relations: list[str], subjects: Sequence[str] | None,
               since: datetime | None, max_label_chars: int, report: DiffReport) -> None:
    """Stream the source into the staging file (a failed read raises: nothing is written)."""
    for fact in source.read(relations, subjects=subjects, since=since):
        if not _skip_too_long(fact, max_label_chars, report):
            stage.add(fact)


def _compare(db: Database, stage: Staging, report: DiffReport, *, full: bool, snapshot_only: bool,
             sample_unchanged: int, clock: datetime, settle_s: int) -> None:
    """Classify the read a chunk at a time against kb_facts (those keys only); mark what to probe."""
    sample = snapshot.RotatingSample(0 if full or snapshot_only else sample_unchanged)
    with db.session() as s:
        for rows in stage.chunks():
            diff = snapshot.compare(s, [f for f, _, _ in rows])
            snapshot.settle(diff, clock, settle_s)
            report.new += len(diff.new)
            report.changed += len(diff.changed)
            report.unchanged += len(diff.unchanged)
            report.settling += len(diff.held)
            report.reverted += len(diff.reverted)
            for fact in diff.held:
                log.info("kb.settling", subject=fact.subject, relation=fact.relation, settle_s=settle_s,
                         objects=list(fact.objects))
            for fact in diff.reverted:
                log.info("kb.settle_reverted", subject=fact.subject, relation=fact.relation)
            sample.offer(diff)

            def rank(fact: Fact, when: int) -> int | None:
                return None if snapshot_only or not fact.objects else NEW if full else when

            stage.mark([(f, "new", rank(f, NEW)) for f in diff.new]
                       + [(f, "changed", rank(f, CHANGED)) for f in diff.changed]
                       + [(f, "unchanged", rank(f, NEW) if full else None) for f in diff.unchanged]
                       + [(f, "held", None) for f in diff.held])
    stage.mark_sample(sample.keys())


def _probe(stage: Staging, load_model: Callable[[], LoadedModel | ServedModel], by_id: dict[str, Relation],
           max_new_tokens: int, batch_size: int, progress: Callable[[int, int], None] | None) -> tuple[str, int | None]:
    """Probe what the stage marks, in-process or through the served model ([probe] endpoint);
    returns the model's identity (damage is blamed per model) and the version that answered
    (None: the base model, or a served model whose version kbsync cannot see)."""
    if not stage.probe_count():    # nothing new or changed: no model to load
        return "", None
    loaded = load_model()          # after the read: a bad KB fails before a model is loaded

    def ask(items: list[ProbeItem]) -> list[ProbeResult]:
        if isinstance(loaded, ServedModel):   # the server tokenises: no labels to check here
            return loaded.probe(items, max_new_tokens)
        return probe(loaded.model, loaded.tokenizer, items, max_new_tokens=max_new_tokens, batch_size=batch_size)

    if isinstance(loaded, LoadedModel):
        for chunk in stage.to_probe():  # every label before any probing
            check_labels(loaded.tokenizer, [fact for fact, _, _ in chunk])
    total, done = stage.probe_count(), 0
    step = max(batch_size * 4, 1)   # probe in chunks so a progress bar can move
    for chunk in stage.to_probe(step):
        facts = [fact for fact, _, _ in chunk]
        items = [ProbeItem(prompt=by_id[f.relation].prompt_for(f.subject_label), acceptable=answers_of(f))
                 for f in facts]
        stage.store_results(facts, ask(items))
        done += len(facts)
        if progress:
            progress(done, total)
    return loaded.identity, loaded.version_id


def _queue(s: Session, chunk: list[tuple[Fact, str, ProbeResult | None]], by_id: dict[str, Relation],
           report: DiffReport, dry_run: bool, run_id: str, model_key: str, on_damage: str, now: holds.Now) -> None:
    """Queue the disagreements of one chunk of probed facts (superseding older pending values).
    A fact the model had right and a live batch made wrong is damage of that batch: flagged against
    it, not queued ([verify] on_damage = "requeue" queues it as a re-edit). A fact under a hold
    (rolled back, failed and waiting, poison, refused for lack of room) is not queued until what
    the hold waits for changes (store/holds.py)."""
    wrong = [(f.subject, f.relation, f.content_hash()) for f, _, r in chunk
             if r is not None and (not r.agrees or names_stale(f, r))]
    blamed = damage.blame(s, model_key, wrong)
    for fact, status, result in chunk:
        assert result is not None
        relation = by_id[fact.relation]
        obj, label = kb_answer(fact)
        answer = result.answer  # the greedy answer's first clause (kbsync.model.probe)
        row = DiffRow(fact.subject, fact.subject_label, fact.relation, label, answer,
                      status, "agrees")
        report.rows.append(row)
        stale_answer = names_stale(fact, result)
        report.stale_answers += stale_answer
        if result.agrees and not stale_answer:
            report.agree += 1
            if not dry_run:  # a request queued for an older KB value must not teach it now
                report.superseded += withdraw_pending(
                    s, fact.subject, fact.relation, set(fact.objects),
                    f"the KB now says {label!r} and the model agrees", run_id)
                damage.resolve(s, fact.subject, fact.relation)
            continue
        culprit = blamed.get((fact.subject, fact.relation))
        harm = damage.Harm(fact.subject, fact.relation, fact.subject_label, relation.prompt_for(fact.subject_label),
                           label, answer, "diff")
        if culprit is not None:
            row.damaged_by = culprit
            report.damaged += 1
            log.warning("damage_found", subject=fact.subject, relation=fact.relation, batch=culprit, answer=answer)
        if culprit is not None and (dry_run or on_damage != "requeue"):
            row.action = "damaged"   # not a KB disagreement: the batch is flagged, the operator decides
            if not dry_run:
                damage.record(s, culprit, [harm], version_id=None, run_id=run_id)
            continue
        waiting = holds.waiting(s, fact.subject, fact.relation, fact.content_hash(), now)
        if waiting is not None:
            row.action, row.held = "held", holds.why_waiting(waiting, now)
            report.held += 1
            continue
        ended = stale_target(fact)
        request = EditRequestRow(
            subject=fact.subject, relation=fact.relation, subject_label=fact.subject_label,
            prompt=relation.prompt, target_new=label, target_new_id=obj,
            target_old=ended or answer or result.answer.strip() or "(nothing)",
            target_old_source="kb" if ended else "model",
            acceptable=answers_of(fact), paraphrases=list(relation.paraphrases),
            kb_revision=fact.revision, content_hash=fact.content_hash(),
        )
        if dry_run:  # what the queue would do with it: a fact already open is not `would_queue`
            plan = would_enqueue(s, request)
            row.action = {"queued": "would_queue", "superseded": "would_supersede", "unchanged": "already_queued",
                          "refresh": "already_queued"}.get(plan.action, plan.action)
            row.request_id = plan.request.id if plan.request is not None else None
            report.queued += plan.action in ("queued", "superseded")
            report.superseded += plan.action == "superseded"
            continue
        why = f"model answered {answer!r}" + (" (an ended value)" if stale_answer else "")
        outcome = enqueue_edit(s, request, f"{why}, KB says {label!r}", run_id)
        row.action = {"unchanged": "already_queued"}.get(outcome.action, outcome.action)
        row.request_id = outcome.request.id if outcome.request else None
        report.queued += outcome.action in ("queued", "superseded")
        if culprit is not None and outcome.request is not None:  # [verify] on_damage = "requeue"
            s.flush()
            damage.requeued(s, culprit, harm, outcome.request.id, run_id)
        report.superseded += outcome.action == "superseded"


def _review_vacant(s: Session, rows: list[tuple[Fact, str | None]], report: DiffReport, run_id: str,
                   config_hash: str, quiet: bool) -> None:
    """Facts the KB now says "none" of: withdraw what is pending for them; report the new and
    changed ones for review (`quiet`, a dry run or a snapshot-only read: count and list, write nothing)."""
    for fact, status in rows:
        if fact.objects or status not in ("new", "changed"):
            continue
        report.review += 1
        former = [fact.object_labels.get(o, o) for o in fact.stale]
        report.rows.append(DiffRow(fact.subject, fact.subject_label, fact.relation, "(none)", "", status, "review"))
        log.warning("kb.no_value_review", subject=fact.subject, relation=fact.relation, former=former,
                    why="the KB says no value now: nothing is taught; review whether the model should unlearn "
                        "the former holder")
        if quiet:
            continue
        withdraw_pending(s, fact.subject, fact.relation, set(), "the KB says no value now (review)", run_id)
        record_event(s, "kb_no_value", run_id=run_id, config_hash=config_hash, subject=fact.subject,
                     relation=fact.relation, former=former, needs_review=True)


def _skip_too_long(fact: Fact, max_chars: int, report: DiffReport) -> bool:
    if not too_long(fact, max_chars):
        return False
    longest = max(len(t) for t in fact.texts())
    log.warning("kb.skipped_too_long", subject=fact.subject, relation=fact.relation,
                chars=longest, max_label_chars=max_chars)
    report.skipped_too_long += 1
    return True

