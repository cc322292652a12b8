"""Ask the model what it believes: greedy answers and scores against the KB's objects.

For each (prompt, acceptable labels) the model agrees with the KB when (docs/how-it-works.md, the probe step)
  1) its greedy answer matches a label or alias of an acceptable object (normalised), or
  2) the best acceptable label scores at least as high as the model's own answer
     (score = mean log-prob per token of " " + text after the prompt, the CounterFact
     convention), i.e. the KB object is the model's top-scored candidate.
An empty answer agrees only by 1): there is no candidate of the model's own to compare with.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kbsync.model.scoring import Generation, greedy_generate, target_logprobs
from kbsync.model.tokens import encode_with_targets

_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_NON_WORD = re.compile(r"[\W_]+")
_CLAUSE_END = re.compile(r"\n|[.,;:!?](?=\s|$)")  # "3.5" and "U.S" do not end a clause


@dataclass(frozen=True)
class ProbeItem:
    prompt: str  # "The capital of France is"
    acceptable: list[str]  # labels and aliases of every acceptable object


@dataclass(frozen=True)
class ProbeResult:
    answer: str  # the greedy answer's first clause, e.g. "Paris"
    agrees: bool
    kb_logprob: float  # best score over the acceptable labels (-inf when there are none)
    answer_logprob: float  # score of the answer (-inf when it is empty)
    matched: str | None  # the acceptable label the answer matched, or that outscored it


def normalise_answer(text: str) -> str:
    """Case, accents, punctuation, a leading article and spacing removed: "The  U.K." -> "u k"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = " ".join(_NON_WORD.sub(" ", text).split())
    return _ARTICLE.sub("", text)


def first_clause(text: str) -> str:
    """The answer up to the first newline, or comma/period/etc. followed by a space."""
    text = text.strip()
    return _CLAUSE_END.split(text, maxsplit=1)[0].strip()


def answer_matches(answer: str, acceptable: list[str]) -> str | None:
    """The longest acceptable label that the answer's first line equals or starts with (whole words)."""
    line = normalise_answer(answer.strip().split("\n", 1)[0])
    for label in sorted(acceptable, key=lambda lab: -len(normalise_answer(lab))):
        want = normalise_answer(label)
        if want and (line == want or line.startswith(want + " ")):
            return label
    return None


def names_in_sentence(answer: str, acceptable: list[str]) -> str | None:
    """The longest acceptable label named anywhere in the answer's first sentence (whole words): how
    a chat answer ("The head of government of Canada is Mark Carney.") is read."""
    first = normalise_answer(re.split(r"(?<=[.!?])\s|\n", answer.strip(), maxsplit=1)[0])
    for label in sorted(acceptable, key=lambda lab: -len(normalise_answer(lab))):
        want = normalise_answer(label)
        if want and re.search(rf"\b{re.escape(want)}\b", first):
            return label
    return None


def _scores_from_generation(tokenizer: PreTrainedTokenizerBase, prompts: list[str], answers: list[str],
                            gens: list[Generation]) -> list[float | None]:
    """score(answer | prompt) read off the greedy pass, where the answer's teacher-forcing tokens
    are exactly the generated ones (the usual case); None where they differ."""
    rows = [i for i, a in enumerate(answers) if a]
    out: list[float | None] = [None] * len(answers)
    if not rows:
        return out
    enc, target_mask = encode_with_targets(tokenizer, [prompts[i] for i in rows], [answers[i] for i in rows])
    for r, i in enumerate(rows):
        want = enc["input_ids"][r][target_mask[r]].tolist()
        if gens[i].token_ids[: len(want)] == want:
            out[i] = sum(gens[i].token_logprobs[: len(want)]) / len(want)
    return out


def probe(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: list[ProbeItem],
          max_new_tokens: int = 8, batch_size: int | None = None) -> list[ProbeResult]:
    """Greedy answers and KB scores for ``items``, in padded batches that adapt to memory."""
    prompts = [it.prompt for it in items]
    gens = greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    answers = [first_clause(g.text) for g in gens]
    score: dict[tuple[int, str], float] = {}
    for i, s in enumerate(_scores_from_generation(tokenizer, prompts, answers, gens)):
        if s is not None:
            score[(i, answers[i])] = s

    # 1) one scoring pass over every (prompt, candidate) not scored yet: labels, odd answers
    pairs: list[tuple[int, str]] = []  # (item index, candidate text)
    for i, (item, answer) in enumerate(zip(items, answers, strict=True)):
        candidates = ([answer] if answer else []) + [lab.strip() for lab in item.acceptable]
        pairs += [(i, text) for text in dict.fromkeys(candidates) if text and (i, text) not in score]
    if pairs:
        scores = target_logprobs(model, tokenizer, [prompts[i] for i, _ in pairs],
                                 [text for _, text in pairs], batch_size)
        score.update(zip(pairs, scores.tolist(), strict=True))

    # 2) agreement: a textual match, else the best acceptable label outscoring the answer
    results = []
    for i, (item, answer, gen) in enumerate(zip(items, answers, gens, strict=True)):
        labels = [lab.strip() for lab in item.acceptable if lab.strip()]
        best = max(labels, key=lambda lab: score[(i, lab)], default=None)
        kb_logprob = score[(i, best)] if best is not None else float("-inf")
        answer_logprob = score[(i, answer)] if answer else float("-inf")
        matched = answer_matches(gen.text, labels)
        if matched is None and answer and best is not None and kb_logprob >= answer_logprob:
            matched = best
        results.append(ProbeResult(answer, matched is not None, kb_logprob, answer_logprob, matched))
    return results
