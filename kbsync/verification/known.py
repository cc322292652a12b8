"""Known facts: facts the model answered right, asked again to see what an edit broke.

One judgement for the regression gate, an edit's at-risk facts and the lifelong benchmark: a
known fact is answered right when the greedy answer to its prompt names one of its acceptable
answers (label or alias), the answer a user would see. No teacher-forced score stands in for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kbsync.store.models import KbFact


@dataclass(frozen=True)
class KnownFact:
    subject: str
    relation: str
    prompt: str                       # filled with the subject
    acceptable: tuple[str, ...]       # labels and aliases a right answer may name
    source: str = "kb"                # kb (a KB fact the model answered right) | shipped (known-facts.json)

    @property
    def key(self) -> str:
        return f"{self.subject}|{self.relation}"

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "prompt": self.prompt,
                "acceptable": list(self.acceptable), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KnownFact:
        return cls(d["subject"], d["relation"], d["prompt"], tuple(d["acceptable"]), d.get("source", "kb"))


def shipped(exclude_subjects: set[str] = frozenset()) -> list[KnownFact]:  # type: ignore[assignment]
    """The facts kbsync ships to top a known-fact sample up with (kbsync/data/known-facts.json:
    ROME's known_1000, MIT licence), in a fixed (hash) order, leaving out `exclude_subjects` (labels)."""
    from importlib import resources

    data = json.loads(resources.files("kbsync").joinpath("data", "known-facts.json").read_text(encoding="utf-8"))
    facts = [KnownFact(f["subject"], f["relation"], f["prompt"], (f["answer"],), "shipped") for f in data["facts"]
             if f["subject"] not in exclude_subjects]
    return sorted(facts, key=lambda f: hashlib.sha256(f.key.encode()).hexdigest())


def known_to(model, tokenizer, candidates: Sequence[KnownFact], n: int, max_new_tokens: int = 8,  # type: ignore[no-untyped-def]
             chunk: int = 64) -> list[KnownFact]:
    """Up to n of the candidates the model answers right (greedy), in the candidates' order; asked a
    chunk at a time, so that n known facts cost about n / (share known) questions, not all of them."""
    out: list[KnownFact] = []
    for i in range(0, len(candidates), chunk):
        if len(out) >= n:
            break
        part = list(candidates[i:i + chunk])
        out += [f for f, ok in zip(part, answered_right(model, tokenizer, part, max_new_tokens), strict=True) if ok]
    return out[:n]


def greedy_known(model, tokenizer, facts: Sequence[KnownFact],  # type: ignore[no-untyped-def]
                 max_new_tokens: int = 8) -> tuple[list[str], list[bool]]:
    """Each fact's greedy answer, and whether it names one of the fact's acceptable answers."""
    from kbsync.model.probe import answer_matches  # the model stack: loaded where a model is used
    from kbsync.model.scoring import greedy_answers

    answers = greedy_answers(model, tokenizer, [f.prompt for f in facts], max_new_tokens) if facts else []
    return answers, [answer_matches(a, list(f.acceptable)) is not None for a, f in zip(answers, facts, strict=True)]


def answered_right(model, tokenizer, facts: Sequence[KnownFact], max_new_tokens: int = 8) -> list[bool]:  # type: ignore[no-untyped-def]
    return greedy_known(model, tokenizer, facts, max_new_tokens)[1]


def kb_answer(f: KbFact) -> str:
    labels = f.labels.get("object_labels", {})
    return next((labels[o] for o in f.objects if o in labels), "")


def kb_answers(f: KbFact) -> list[str]:
    """Labels, then aliases, of the fact's acceptable objects (what a right answer may name)."""
    labels, aliases = f.labels.get("object_labels", {}), f.labels.get("object_aliases", {})
    out: list[str] = []
    for o in f.objects:
        for text in (labels.get(o, ""), *aliases.get(o, ())):
            if text and text not in out:
                out.append(text)
    return out
