"""The global regression gate (DESIGN §1.6): before a version becomes current, the rest of the
model is measured (verification/figures.py) and judged against the previous version and the base.

    gate.prepare()           before a batch: the base figures (measured once, on base weights, with
                             the fixed held-out texts and known facts kept in SQL) and the current
                             version's (stored, else measured now, before the edit)
    gate.check(...)          on the edited model: a GateVerdict
    gate.save(s, ...)        the candidate's figures, in the publish's (or the abandon's) transaction

A candidate passes when its perplexity rose at most [gate] max_perplexity_rise over the previous
version and max_perplexity_rise_base over the base, its known-fact accuracy fell at most
max_known_drop / max_known_drop_base (on the same facts, leaving out facts that edits changed on
purpose), its retention fell at most max_retention_drop from the previous version's on the same
earlier edits, and its retention is at least min_retention unless the batch lost none of them:
the floor refuses a batch that loses edits below it, not every batch after the log lost some
(re-solving the log from the base, `kbsync compact`, is the way back above it). A figure that was
not measured (no known facts yet, no earlier edits) gates nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from itertools import islice

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync.config import GateSettings
from kbsync.editing.configured import corpus_for, shipped_text
from kbsync.editing.covariance import ModelSampleCorpus
from kbsync.editing.stats_cache import resolve_corpus
from kbsync.errors import ConfigError
from kbsync.logs import get_logger
from kbsync.prompts import fill
from kbsync.store.log import expand_compactions
from kbsync.store.models import EditRequestRow, GateFigures, KbFact, Probe
from kbsync.store.states import RequestState
from kbsync.verification.damage import Harm
from kbsync.verification.figures import EPS, Figures, Retained, measure
from kbsync.verification.known import KnownFact, kb_answers, known_to, shipped
from kbsync.versions.context import EditingContext
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)
HELDOUT_SEED = 1   # model-written held-out text: another seed than the key statistics' (0)


def _rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class GateVerdict:
    ok: bool
    reason: str
    figures: Figures
    harms: list[Harm] = field(default_factory=list)
    edited: set[str] = field(default_factory=set)


def setup_key(writer: ModelWriter) -> str:
    g = writer.settings.gate
    spec = {"corpus": g.corpus, "texts": g.texts, "known_facts": g.known_facts,
            "editing_corpus": writer.settings.editing.corpus if g.corpus == "auto" else "",
            "known": "greedy, topped up from known-facts.json"}  # how the known facts are chosen
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def heldout_texts(ctx: EditingContext, spec: str, n: int) -> list[str]:
    """[gate] corpus: auto = the shipped held-out text of a builtin:NAME-samples corpus
    (builtin:NAME-heldout: the same model's text from another seed), else the [editing] corpus
    file's texts after those the key statistics read (when it has n more), else model-written text
    (another seed than the key statistics'); model-samples; builtin:name; a path."""
    loaded = ctx.loaded
    if spec == "auto":
        editing, spec = resolve_corpus(ctx.settings.editing.corpus, loaded.spec), "model-samples"  # auto: as read
        heldout = editing.removesuffix("-samples") + "-heldout"
        if editing.startswith("builtin:") and editing.endswith("-samples") and shipped_text(heldout).is_file():
            spec = heldout
        elif editing != "model-samples" and not editing.startswith("hf:"):
            skip = ctx.hparams.cov_samples
            texts = list(islice(corpus_for(editing, loaded).texts(), skip, skip + n))
            if len(texts) == n:
                return texts
    if spec == "model-samples":
        corpus = ModelSampleCorpus(loaded.model, loaded.tokenizer, seed=HELDOUT_SEED, batch_size=min(n, 32))
        return list(islice(corpus.texts(), n))
    try:
        return list(islice(corpus_for(spec, loaded).texts(), n))
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("[editing] corpus", "[gate] corpus")) from exc


def known_sample(s: Session, n: int) -> list[KnownFact]:
    """Up to n facts the model answered right at their last probe (on the KB content it answered),
    taken in turn from each relation, in a fixed (hash) order."""
    if n <= 0:
        return []
    last = select(func.max(Probe.id)).group_by(Probe.subject, Probe.relation)
    probes = {(p.subject, p.relation): p for p in s.scalars(select(Probe).where(Probe.id.in_(last), Probe.agrees))}
    by_relation: dict[str, list[KnownFact]] = {}
    for f in s.scalars(select(KbFact)):
        p = probes.get((f.subject, f.relation))
        if p is not None and p.content_hash == f.content_hash and kb_answers(f):
            by_relation.setdefault(f.relation, []).append(KnownFact(f.subject, f.relation, p.prompt, tuple(kb_answers(f))))
    queues = [sorted(v, key=lambda k: _rank(k.key)) for _, v in sorted(by_relation.items())]
    out: list[KnownFact] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def retention_sample(s: Session, batch_ids: list[int], n: int) -> list[Retained]:
    """Up to n verified edits of these batches (a fixed-seed sample). A verified edit held on its own
    checks when it was published, so every one counts: one that has since stopped holding is what
    retention measures."""
    if n <= 0 or not batch_ids:
        return []
    rows = {r.id: r for r in s.scalars(select(EditRequestRow).where(
        EditRequestRow.batch_id.in_(batch_ids), EditRequestRow.state == RequestState.VERIFIED.value))}
    chosen = sorted(rows, key=lambda rid: _rank(str(rid)))[:n]
    return [Retained(rid, fill(rows[rid].prompt, rows[rid].subject_label),
                     tuple(rows[rid].acceptable or [rows[rid].target_new])) for rid in sorted(chosen)]


def edited_keys(s: Session, batch_ids: list[int], request_ids: list[int]) -> set[str]:
    """Facts that edits of these batches (or these requests) changed on purpose."""
    rows = s.execute(select(EditRequestRow.subject, EditRequestRow.relation).where(
        EditRequestRow.batch_id.in_(batch_ids) | EditRequestRow.id.in_(request_ids)))
    return {f"{subject}|{relation}" for subject, relation in rows}


def judge(candidate: Figures, previous: Figures, base: Figures, edited: set[str],
          bounds: GateSettings) -> tuple[bool, str]:
    """(passed, reason): the candidate against the previous version and the base model; known facts
    in `edited` (changed on purpose by an edit) are left out of every accuracy."""
    broken: list[str] = []
    shown: list[str] = []
    ppl = candidate.perplexity
    for name, ref, limit in (("previous", previous.perplexity, bounds.max_perplexity_rise),
                             ("base", base.perplexity, bounds.max_perplexity_rise_base)):
        if ppl is not None and ref:
            rise = ppl / ref - 1
            (broken if rise > limit else shown).append(
                f"perplexity {ppl:.2f} is {rise:+.1%} over the {name} {ref:.2f} (max +{limit:.0%})")
    keys = [k for k in candidate.known_ok if k not in edited]
    acc = candidate.known_acc(keys)
    for name, ref_fig, limit in (("previous", previous, bounds.max_known_drop),
                                 ("base", base, bounds.max_known_drop_base)):
        common = [k for k in keys if k in ref_fig.known_ok]
        now, ref = candidate.known_acc(common), ref_fig.known_acc(common)
        if now is not None and ref is not None:
            (broken if ref - now > limit + EPS else shown).append(
                f"known-fact accuracy {now:.2f} vs {ref:.2f} of the {name} on {len(common)} facts "
                f"(max drop {limit:.2f})")
    if candidate.retention is not None:
        common = [r for r in candidate.retained_ok if r in previous.retained_ok]
        now, ref = candidate.retention_on(common), previous.retention_on(common)
        lost = sum(previous.retained_ok[r] and not candidate.retained_ok[r] for r in common)
        if now is not None and ref is not None:
            (broken if ref - now > bounds.max_retention_drop + EPS else shown).append(
                f"retention {now:.2f} vs {ref:.2f} of the previous on {len(common)} earlier edits "
                f"(max drop {bounds.max_retention_drop:.2f})")
        if candidate.retention < bounds.min_retention and (ref is None or lost):
            broken.append(f"retention {candidate.retention:.2f} of {candidate.n_retention} earlier edits "
                          f"(min {bounds.min_retention:.2f}; `kbsync compact` re-solves them from the base)")
        elif ref is None:
            shown.append(f"retention {candidate.retention:.2f} of {candidate.n_retention} earlier edits")
    if broken:
        return False, "regression gate: " + "; ".join(broken)
    return True, "gate passed: " + ("; ".join(shown) if shown else "nothing measured") + \
        (f" (known-fact accuracy {acc:.2f})" if acc is not None and not shown else "")


def newly_wrong(candidate: Figures, previous: Figures, edited: set[str]) -> list[str]:
    """Known facts right on the previous version and wrong on the candidate: damage."""
    return sorted(k for k, ok in candidate.known_ok.items()
                  if not ok and previous.known_ok.get(k) and k not in edited)


class RegressionGate:
    """The gate of one writer's model during an apply run."""

    def __init__(self, writer: ModelWriter) -> None:
        self.writer, self.bounds = writer, writer.settings.gate
        self.setup = setup_key(writer)
        self.texts: list[str] = []
        self.known: list[KnownFact] = []
        self.base: Figures | None = None
        self.previous: Figures | None = None
        self.previous_version: int | None = -1     # the version `previous` was read for

    @property
    def ctx(self) -> EditingContext:
        return self.writer.context()

    def _measure(self, retained: list[Retained] | None = None) -> Figures:
        loaded = self.ctx.loaded
        return measure(loaded.model, loaded.tokenizer, self.texts, self.known, retained or [],
                       self.writer.settings.probe.max_new_tokens)

    def prepare(self) -> None:
        """The base figures and the current version's, measuring what SQL does not hold yet."""
        db, key = self.writer.db, self.writer.model_key
        known_now: list[KnownFact] = []
        with db.session() as s:
            row = s.scalars(select(GateFigures).where(GateFigures.model_key == key, GateFigures.scope == "base",
                                                      GateFigures.setup == self.setup)
                            .order_by(GateFigures.id.desc())).first()
            if row is None or not row.details.get("known"):
                known_now = known_sample(s, self.bounds.known_facts)
            if row is not None and (row.details.get("known") or not known_now):
                self.texts = list(row.details.get("texts", []))
                self.known = [KnownFact.from_dict(d) for d in row.details.get("known", [])]
                self.base = Figures.from_row(row)
            else:  # once per (model, gate setup); again only when the first had no known facts to fix
                self.base = None
        if self.base is None:
            self.base = self._measure_base(known_now)
            self.previous_version = -1
        if self.previous_version == self.writer.version_id:
            return
        with db.session() as s:
            version = self.writer.version_id
            stored = None if version is None else s.scalars(
                select(GateFigures).where(GateFigures.model_version_id == version, GateFigures.setup == self.setup)
                .order_by(GateFigures.id.desc())).first()
            self.previous = self.base if version is None else Figures.from_row(stored) if stored else None
        if self.previous is None:  # a version from before the gate, or a rollback: measure it as it is
            self.previous = self._measure(self._retained())
            with db.session() as s:
                self._row(s, "version", self.previous, version_id=self.writer.version_id, passed=True,
                          reason="measured before the next batch")
        self.previous_version = self.writer.version_id

    def _measure_base(self, candidates: list[KnownFact]) -> Figures:
        """The base figures: held-out perplexity, and the known facts fixed for good: the KB facts the
        base answers right (greedy), topped up to [gate] known_facts from the shipped facts the base
        answers right when the KB offers fewer (a KB of changing leaders may offer one)."""
        store, loaded, n = self.ctx.store, self.ctx.loaded, self.bounds.known_facts
        live = list(store.active)
        if live:
            store.materialise([])
        try:
            tokens = self.writer.settings.probe.max_new_tokens
            known = known_to(loaded.model, loaded.tokenizer, candidates, n, tokens)
            if len(known) < n:
                with self.writer.db.session() as s:
                    labels = set(s.scalars(select(KbFact.subject_label)))
                known += known_to(loaded.model, loaded.tokenizer, shipped(labels), n - len(known), tokens)
            self.texts, self.known = heldout_texts(self.ctx, self.bounds.corpus, self.bounds.texts), known
            figures = self._measure()
        finally:
            if live:
                store.materialise(live)
        sources = {src: sum(k.source == src for k in known) for src in ("kb", "shipped")}
        with self.writer.db.session() as s:
            self._row(s, "base", figures, passed=True, reason="the base model",
                      extra={"texts": self.texts, "known": [k.as_dict() for k in known], "known_sources": sources})
        log.info("gate_base_measured", perplexity=figures.perplexity, known_acc=figures.known_acc(),
                 n_known=len(known), known_sources=sources, n_texts=len(self.texts))
        return figures

    def check(self, request_ids: list[int]) -> GateVerdict:
        """The edited model against the previous version and the base."""
        assert self.base is not None and self.previous is not None, "prepare() first"
        with self.writer.db.session() as s:
            active = expand_compactions(s, [b for b, _ in self.ctx.store.active])
            edited = edited_keys(s, active, request_ids)
        figures = self._measure(self._retained())
        ok, reason = judge(figures, self.previous, self.base, edited, self.bounds)
        by_key = {k.key: k for k in self.known}
        harms = [Harm(by_key[k].subject, by_key[k].relation, "", by_key[k].prompt, by_key[k].acceptable[0],
                      figures.answers.get(k, ""), "gate") for k in newly_wrong(figures, self.previous, edited)]
        return GateVerdict(ok, reason, figures, harms, edited)

    def _retained(self) -> list[Retained]:
        """The retention sample among the verified edits of the batches the model holds now."""
        with self.writer.db.session() as s:  # a compaction's edits keep their own batches
            live = expand_compactions(s, [b for b, _ in self.ctx.store.active])
            return retention_sample(s, live, self.bounds.retention_sample)

    def save(self, s: Session, batch_id: int, verdict: GateVerdict, version_id: int | None) -> None:
        self._row(s, "batch", verdict.figures, batch_id=batch_id, version_id=version_id, passed=verdict.ok,
                  reason=verdict.reason, edited=verdict.edited)
        if verdict.ok and version_id is not None:
            self.previous, self.previous_version = verdict.figures, version_id

    def _row(self, s: Session, scope: str, figures: Figures, *, batch_id: int | None = None,
             version_id: int | None = None, passed: bool, reason: str, extra: dict | None = None,
             edited: set[str] | None = None) -> None:
        keys = [k for k in figures.known_ok if k not in (edited or set())]
        s.add(GateFigures(model_key=self.writer.model_key, setup=self.setup, scope=scope, batch_id=batch_id,
                          model_version_id=version_id, perplexity=figures.perplexity,
                          known_acc=figures.known_acc(keys), n_known=len(keys), retention=figures.retention,
                          n_retention=figures.n_retention, passed=passed, reason=reason,
                          details=figures.details() | (extra or {})))
