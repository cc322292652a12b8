"""The global regression gate's measurements and judgement (DESIGN §1.6; issue 13).

Three figures of a model state, on sets fixed once (with the base model's figures):
- perplexity    exp(mean token NLL) over held-out texts ([gate] corpus, texts)
- known_acc     share of known facts (answered right at their last probe, sampled across
                relations with a fixed seed) the model still agrees on, as `diff` judges it
                (the greedy answer names a KB label or alias, or the KB value out-scores it)
- retention     share of sampled earlier verified edits whose greedy answer still names the target
A candidate (the model with a batch applied) passes when its perplexity rose at most
[gate] max_perplexity_rise over the previous version and max_perplexity_rise_base over the base,
its known-fact accuracy fell at most max_known_drop / max_known_drop_base (on the same facts,
leaving out facts that edits changed on purpose), its retention fell at most max_retention_drop
from the previous version's on the same earlier edits, and its retention is at least min_retention
unless the batch lost none of them: the floor refuses a batch that loses edits below it, not
every batch after the log lost some (re-solving the log from the base, `kbsync compact`, is the
way back above it). A figure that was not measured (no known facts yet, no earlier edits) gates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kbsync.config import GateSettings
from kbsync.model.probe import ProbeItem, answer_matches, probe
from kbsync.model.scoring import greedy_answers, perplexity

EPS = 1e-9  # a drop of exactly the bound (1.00 -> 0.95 with 0.05) is within it, whatever the float rounding


def share(flags: dict[str, bool], keys: Iterable[str]) -> float | None:
    """Share of True among flags[k] for the keys that flags holds (None when it holds none)."""
    picked = [flags[k] for k in keys if k in flags]
    return sum(picked) / len(picked) if picked else None


@dataclass(frozen=True)
class KnownFact:
    subject: str
    relation: str
    prompt: str
    acceptable: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.subject}|{self.relation}"

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "prompt": self.prompt,
                "acceptable": list(self.acceptable)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KnownFact:
        return cls(d["subject"], d["relation"], d["prompt"], tuple(d["acceptable"]))


@dataclass(frozen=True)
class Retained:
    """An earlier verified edit re-asked by the gate."""

    request_id: int
    prompt: str
    acceptable: tuple[str, ...]


@dataclass
class Figures:
    perplexity: float | None
    known_ok: dict[str, bool] = field(default_factory=dict)     # known fact key -> answered right
    answers: dict[str, str] = field(default_factory=dict)       # known fact key -> greedy answer (wrong ones)
    retention: float | None = None
    n_retention: int = 0
    retained_ok: dict[str, bool] = field(default_factory=dict)  # earlier edit (request id) -> still named

    def known_acc(self, keys: Iterable[str] | None = None) -> float | None:
        return share(self.known_ok, self.known_ok if keys is None else keys)

    def retention_on(self, request_ids: Iterable[str]) -> float | None:
        return share(self.retained_ok, request_ids)

    def details(self) -> dict[str, Any]:
        return {"known_ok": self.known_ok, "answers": self.answers, "retained_ok": self.retained_ok}

    @classmethod
    def from_row(cls, row: Any) -> Figures:
        d = row.details or {}
        return cls(row.perplexity, dict(d.get("known_ok", {})), dict(d.get("answers", {})), row.retention,
                   row.n_retention, dict(d.get("retained_ok", {})))


def measure(model, tokenizer, texts: list[str], known: list[KnownFact], retained: list[Retained],  # type: ignore[no-untyped-def]
            max_new_tokens: int = 8) -> Figures:
    """The three figures of the model as it is now: known facts probed as `diff` probes them,
    earlier edits by their greedy answers."""
    ppl = perplexity(model, tokenizer, texts) if texts else math.nan
    figures = Figures(None if math.isnan(ppl) else ppl)
    results = probe(model, tokenizer, [ProbeItem(k.prompt, list(k.acceptable)) for k in known],
                    max_new_tokens=max_new_tokens) if known else []
    for k, result in zip(known, results, strict=True):
        figures.known_ok[k.key] = result.agrees
        if not result.agrees:
            figures.answers[k.key] = result.answer
    answers = greedy_answers(model, tokenizer, [r.prompt for r in retained], max_new_tokens=max_new_tokens) \
        if retained else []
    figures.retained_ok = {str(r.request_id): answer_matches(a, list(r.acceptable)) is not None
                           for r, a in zip(retained, answers, strict=True)}
    figures.retention, figures.n_retention = figures.retention_on(figures.retained_ok), len(retained)
    return figures


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
