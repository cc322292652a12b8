"""What the regression gate measures on a model state (verification/gate.py judges it).

Three figures, on sets fixed once with the base model's figures:
- perplexity    exp(mean token NLL) over held-out texts ([gate] corpus, texts)
- known_acc     share of known facts answered right, greedy (`verification.known`)
- retention     share of sampled earlier verified edits whose greedy answer still names the target
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kbsync.model.probe import answer_matches
from kbsync.model.scoring import greedy_answers, perplexity
from kbsync.verification.known import KnownFact, greedy_known

EPS = 1e-9  # a drop of exactly the bound (1.00 -> 0.95 with 0.05) is within it, whatever the float rounding


def share(flags: dict[str, bool], keys: Iterable[str]) -> float | None:
    """Share of True among flags[k] for the keys that flags holds (None when it holds none)."""
    picked = [flags[k] for k in keys if k in flags]
    return sum(picked) / len(picked) if picked else None


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
    lost_answers: dict[str, str] = field(default_factory=dict)  # earlier edit no longer named -> its greedy answer

    def known_acc(self, keys: Iterable[str] | None = None) -> float | None:
        return share(self.known_ok, self.known_ok if keys is None else keys)

    def retention_on(self, request_ids: Iterable[str]) -> float | None:
        return share(self.retained_ok, request_ids)

    def details(self) -> dict[str, Any]:
        return {"known_ok": self.known_ok, "answers": self.answers, "retained_ok": self.retained_ok,
                "lost_answers": self.lost_answers}

    @classmethod
    def from_row(cls, row: Any) -> Figures:
        d = row.details or {}
        return cls(row.perplexity, dict(d.get("known_ok", {})), dict(d.get("answers", {})), row.retention,
                   row.n_retention, dict(d.get("retained_ok", {})))


def measure(model, tokenizer, texts: list[str], known: list[KnownFact], retained: list[Retained],  # type: ignore[no-untyped-def]
            max_new_tokens: int = 8) -> Figures:
    """The three figures of the model as it is now: known facts and earlier edits by their greedy answers."""
    ppl = perplexity(model, tokenizer, texts) if texts else math.nan
    figures = Figures(None if math.isnan(ppl) else ppl)
    answers, right = greedy_known(model, tokenizer, known, max_new_tokens)
    for k, answer, ok in zip(known, answers, right, strict=True):
        figures.known_ok[k.key] = ok
        if not ok:
            figures.answers[k.key] = answer
    answers = greedy_answers(model, tokenizer, [r.prompt for r in retained], max_new_tokens=max_new_tokens) \
        if retained else []
    figures.retained_ok = {str(r.request_id): answer_matches(a, list(r.acceptable)) is not None
                           for r, a in zip(retained, answers, strict=True)}
    figures.lost_answers = {str(r.request_id): a for r, a in zip(retained, answers, strict=True)
                            if not figures.retained_ok[str(r.request_id)]}
    figures.retention, figures.n_retention = figures.retention_on(figures.retained_ok), len(retained)
    return figures
