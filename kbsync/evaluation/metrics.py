"""CounterFact metrics (ES, PS, NS and the greedy accuracies: docs/benchmarks.md) of a model on a list of cases.

score(o | p) = mean per-token log-prob of " o" after p (kbsync.model.scoring.target_logprobs).
    ES  share of cases with score(new | prompt) > score(old | prompt)
    PS  the same on paraphrase prompts (mean over a case's paraphrases, then over cases: ROME)
    NS  share of neighbour prompts with score(true | p) > score(new | p) (per case, then mean)
    score = harmonic mean of ES, PS, NS
    efficacy_acc / paraphrase_acc  the greedy answer equals or starts with target_new
    GE  generation entropy: ROME's compute_n_gram_entropy of greedy generations, x100
    perplexity  exp(mean NLL per predicted token) of fixed texts (lifelong.py's held-out text)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .datasets import EvalCase

# nltk.word_tokenize, near enough for counting n-grams: words (with inner apostrophes) and
# single punctuation marks
_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
GE_PROMPTS = ("{} is", "{} was known for", "The story of {} begins", "Here is what I know about {}:",
              "{} is famous because", "People say that {}", "{} and", "The first thing to know about {} is",
              "In the news today, {}", "Everyone agrees that {}")


def harmonic_mean(values: Sequence[float]) -> float:
    """0 when any value is 0 (as CounterFact's Score)."""
    if not values or any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's compute_n_gram_entropy: mean over n of weight_n * entropy (bits) of the n-gram
    frequencies of the word tokens. A text too short for any n-gram has entropy 0."""
    tokens = _TOKEN.findall(text)
    parts = []
    for n, w in zip(ns, weights, strict=True):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        parts.append(w * h)
    return sum(parts) / len(parts)


def generation_entropy(texts: Sequence[str]) -> float:
    """GE: the mean ngram_entropy of the texts, x100 by convention (ROME reports 626 for 6.26)."""
    return 100.0 * sum(ngram_entropy(t) for t in texts) / len(texts) if texts else float("nan")


def ge_prompts(cases: Sequence[EvalCase], n: int = 10) -> list[str]:
    """n fixed prompts about the edited subjects, spread evenly over the cases."""
    if not cases or n <= 0:
        return []
    picks = [cases[round(i * (len(cases) - 1) / max(n - 1, 1))] for i in range(n)] if len(cases) > 1 else list(cases) * n
    return [GE_PROMPTS[i % len(GE_PROMPTS)].format(c.subject) for i, c in enumerate(picks)]


@dataclass
class Metrics:
    es: float
    ps: float
    ns: float
    score: float
    efficacy_acc: float
    paraphrase_acc: float
    ge: float | None
    wins: list[bool] = field(default_factory=list, repr=False)  # per case: P(new) > P(old) on its prompt

    def as_dict(self) -> dict[str, float | None]:
        d = asdict(self)
        del d["wins"]
        return d


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def _case_means(flags: Sequence[bool], owners: Sequence[int]) -> float:
    """Mean over the cases that have any flag of the share of their flags that hold."""
    per: dict[int, list[bool]] = {}
    for f, i in zip(flags, owners, strict=True):
        per.setdefault(i, []).append(f)
    return sum(_share(v) for v in per.values()) / len(per) if per else float("nan")


def measure(model, tokenizer, cases: Sequence[EvalCase], *, gen_prompts: Sequence[str] = (),
            gen_tokens: int = 100, answer_tokens: int = 8, batch_size: int | None = None) -> Metrics:
    """All metrics of ``model`` on ``cases`` in one scoring pass and two greedy passes."""
    from kbsync.model.probe import answer_matches
    from kbsync.model.scoring import greedy_answers, greedy_generate, target_logprobs

    # 1) one scoring pass over (prompt, target) pairs: prompt, paraphrases, neighbours
    prompts: list[str] = []
    targets: list[str] = []
    para_owner = [i for i, c in enumerate(cases) for _ in c.paraphrases]
    para = [p for c in cases for p in c.paraphrases]
    neigh_owner = [i for i, c in enumerate(cases) for _ in c.neighbours]
    neigh = [(p, true, c.target_new) for c in cases for p, true in c.neighbours]
    for c in cases:
        prompts += [c.prompt, c.prompt]
        targets += [c.target_new, c.target_true]
    for p, i in zip(para, para_owner, strict=True):
        prompts += [p, p]
        targets += [cases[i].target_new, cases[i].target_true]
    for p, true, new in neigh:
        prompts += [p, p]
        targets += [true, new]
    s = target_logprobs(model, tokenizer, prompts, targets, batch_size).tolist() if prompts else []
    first = [a > b for a, b in zip(s[0::2], s[1::2], strict=True)]  # (pairs,) first target wins
    n, n_para = len(cases), len(para)
    wins = first[:n]
    es = _share(wins)
    ps = _case_means(first[n:n + n_para], para_owner)
    ns = _case_means(first[n + n_para:], neigh_owner)

    # 2) greedy answers on prompts and paraphrases
    answers = greedy_answers(model, tokenizer, [c.prompt for c in cases] + para, answer_tokens, batch_size)
    hits = [answer_matches(a, [cases[i].target_new]) is not None
            for a, i in zip(answers, list(range(n)) + para_owner, strict=True)]
    efficacy_acc = _share(hits[:n])
    paraphrase_acc = _case_means(hits[n:], para_owner)

    # 3) fluency: greedy generations (prompt included, as ROME scores them)
    ge = None
    if gen_prompts and gen_tokens > 0:
        gens = greedy_generate(model, tokenizer, list(gen_prompts), gen_tokens, batch_size)
        ge = generation_entropy([p + g.text for p, g in zip(gen_prompts, gens, strict=True)])
    parts = [es, ps, ns]
    score = harmonic_mean([v for v in parts if not math.isnan(v)])
    return Metrics(es, ps, ns, score, efficacy_acc, paraphrase_acc, ge, wins)
