"""Per-edit checks (DESIGN §4 conventions): each edit measured against its *rival* (the value it
replaces, see `choose_rivals`), all edits of a batch in a few batched passes.

- efficacy_acc   the greedy answer to the prompt names the new value (label or alias)
- paraphrase_acc the greedy answer to each paraphrase names the new value
- held_out_acc   the greedy answer to each held-out phrasing (the relation's question in a form the
                 edit was not optimised on, sync/requests.py) names the new value: at its start for
                 a plain question (`names_held_out`), anywhere in the first sentence of a chat answer
- neighbour_acc  the greedy answer to each neighbour's prompt still names its KB value (a neighbour
                 that did not name it before the edit either is not the edit's doing: the
                 verifier asks the model before the edit about those, verification/verifier.py)
- efficacy       P(new | prompt) > P(rival | prompt)          (score = mean token log-prob)
- paraphrase     P(new | paraphrase) > P(rival | paraphrase), per paraphrase prompt
- neighbour      P(true | neighbour prompt) > P(new | neighbour prompt), per neighbour fact

What an edit is checked on comes from verification/neighbours.py; how the checks are judged,
per edit and per batch, from verification/verdict.py.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from kbsync.logs import get_logger
from kbsync.model.probe import answer_matches, names_in_sentence, normalise_answer
from kbsync.model.scoring import greedy_answers, target_logprobs
from kbsync.store.models import EditCheck

log = get_logger(__name__)

KINDS = ("efficacy_acc", "paraphrase_acc", "held_out_acc", "neighbour_acc",
         "efficacy", "paraphrase", "neighbour")  # greedy first
CHAT_ANSWER_TOKENS = 24   # a chat answer is a sentence; the value comes after a few words


@dataclass(frozen=True)
class Neighbour:
    prompt: str
    answer: str     # what the model answered right before, and must still prefer
    subject: str = ""
    relation: str = ""
    acceptable: tuple[str, ...] = ()   # labels/aliases of the KB answer (a greedy answer naming one is right)
    at_risk: bool = False              # chosen for its key's closeness to the edited subject's


@dataclass(frozen=True)
class HeldOut:
    """A phrasing the edit was not optimised on, asked as a check (held_out_acc)."""
    prompt: str            # the text the model continues
    in_chat: bool = False  # a user's turn in the chat template: the answer is a sentence


@dataclass
class EditUnderTest:
    request_id: int
    prompt: str                      # filled with the subject
    target_new: str
    target_old: str                  # the stale value: an ended KB value, else the model's answer
    acceptable: list[str]            # labels/aliases counting as the new target
    paraphrases: list[str] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)
    held_out: list[HeldOut] = field(default_factory=list)
    target_old_source: str = "model"  # kb | model
    candidates: list[str] = field(default_factory=list)  # entity-like rivals when target_old is filler


@dataclass(frozen=True)
class Rival:
    text: str
    source: str   # kb (ended KB value) | model (its previous answer) | candidate (best-scored KB object)


@dataclass(frozen=True)
class Check:
    request_id: int
    kind: str          # one of KINDS
    prompt: str
    expected: str
    rival: str         # the value it must beat (for *_acc: the greedy answer)
    logprob_expected: float
    logprob_rival: float
    passed: bool


# --- the rival an edit is judged against ------------------------------------------------
_FILLER_START = re.compile(r"^(a|an|the same|one of|not|also|known|called|named|that|this|it|which|"
                           r"located|used|based|part of|home to|the (first|second|most|best|only|name|city|country))\b")
_STOPWORDS = frozenset("a an the of in on at to for and or is was be by with as it its this that same "
                       "name one not also which who from".split())
MAX_ENTITY_WORDS = 5


def is_filler(answer: str) -> bool:
    """True for an answer that names nothing ("", "(nothing)", "the same name", "a testament to the
    power of human ingenuity"): empty, long, a generic phrase, or only function words."""
    text = answer.strip().split("\n", 1)[0].strip(" .,;:")
    words = normalise_answer(text).split()
    if not words or text.startswith("(") or len(text.split()) > MAX_ENTITY_WORDS:
        return True
    return bool(_FILLER_START.match(text.casefold())) or all(w in _STOPWORDS for w in words)


def pick_rival(edit: EditUnderTest, scores: dict[str, float]) -> Rival:
    """The stale value the edit must beat: the ended KB value; else the model's previous answer,
    unless that is filler, then the best-scored entity-like candidate (`scores`: candidate ->
    mean log-prob on the edit prompt) that is not the new value itself."""
    if edit.target_old_source == "kb" or not is_filler(edit.target_old):
        return Rival(edit.target_old, edit.target_old_source)
    usable = [c for c in rival_candidates(edit) if c in scores]
    if not usable:
        return Rival(edit.target_old, edit.target_old_source)
    return Rival(max(usable, key=lambda c: (scores[c], c)), "candidate")


def rival_candidates(edit: EditUnderTest) -> list[str]:
    new = edit.acceptable or [edit.target_new]
    return [c for c in edit.candidates if not is_filler(c) and answer_matches(c, new) is None]


def choose_rivals(model, tokenizer, edits: list[EditUnderTest]) -> dict[int, Rival]:  # type: ignore[no-untyped-def]
    """request id -> its rival; candidates of filler answers scored in one batched pass."""
    wanted = [(e, c) for e in edits if e.target_old_source != "kb" and is_filler(e.target_old)
              for c in rival_candidates(e)]
    lps = target_logprobs(model, tokenizer, [e.prompt for e, _ in wanted], [c for _, c in wanted]).tolist() if wanted else []
    scores: dict[int, dict[str, float]] = defaultdict(dict)
    for (e, c), lp in zip(wanted, lps, strict=True):
        scores[e.request_id][c] = lp
    rivals = {e.request_id: pick_rival(e, scores[e.request_id]) for e in edits}
    for e in edits:
        if rivals[e.request_id].source == "candidate":
            log.info("rival_replaced", request=e.request_id, filler=e.target_old, rival=rivals[e.request_id].text)
    return rivals


# --- running the checks ---------------------------------------------------------------
def run_checks(model, tokenizer, edits: list[EditUnderTest], max_new_tokens: int = 8) -> list[Check]:  # type: ignore[no-untyped-def]
    """All checks of all edits, scored in a few batched passes."""
    rivals = choose_rivals(model, tokenizer, edits)
    pairs: list[tuple[int, str, str, str, str]] = []  # (request, kind, prompt, expected, rival)
    for e in edits:
        rival = rivals[e.request_id].text
        pairs.append((e.request_id, "efficacy", e.prompt, e.target_new, rival))
        pairs += [(e.request_id, "paraphrase", p, e.target_new, rival) for p in e.paraphrases]
        # a neighbour whose own answer is the edit's new value cannot out-score it: no teacher-forced check
        pairs += [(e.request_id, "neighbour", n.prompt, n.answer, e.target_new) for n in e.neighbours
                  if normalise_answer(n.answer) != normalise_answer(e.target_new)]
    scored = sorted({(p[2], t) for p in pairs for t in (p[3], p[4])})  # each (prompt, value) scored once
    lps = target_logprobs(model, tokenizer, [p for p, _ in scored], [t for _, t in scored]).tolist() if scored else []
    lp = dict(zip(scored, lps, strict=True))
    checks = [Check(rid, kind, prompt, exp, riv, lp[prompt, exp], lp[prompt, riv], lp[prompt, exp] > lp[prompt, riv])
              for rid, kind, prompt, exp, riv in pairs]
    greedy: list[tuple[int, str, str, str, list[str]]] = []  # (request, kind, prompt, expected, acceptable)
    for e in edits:
        new = e.acceptable or [e.target_new]
        greedy.append((e.request_id, "efficacy_acc", e.prompt, e.target_new, new))
        greedy += [(e.request_id, "paraphrase_acc", p, e.target_new, new) for p in e.paraphrases]
        greedy += [(e.request_id, "neighbour_acc", n.prompt, n.answer, list(n.acceptable or (n.answer,)))
                   for n in e.neighbours]
    prompts = sorted({g[2] for g in greedy})  # a neighbour shared by several edits is asked once
    answers = dict(zip(prompts, greedy_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
                       if prompts else [], strict=True))
    for rid, kind, prompt, expected, acceptable in greedy:
        checks.append(Check(rid, kind, prompt, expected, answers[prompt], 0.0, 0.0,
                            answer_matches(answers[prompt], acceptable) is not None))
    return checks + held_out_checks(model, tokenizer, edits, max_new_tokens)


def held_out_checks(model, tokenizer, edits: list[EditUnderTest], max_new_tokens: int = 8) -> list[Check]:  # type: ignore[no-untyped-def]
    """held_out_acc: each edit's held-out phrasings, plain ones read as the prompt's answer is, chat
    turns from a longer answer's first sentence."""
    out: list[Check] = []
    for in_chat, tokens in ((False, max_new_tokens), (True, CHAT_ANSWER_TOKENS)):
        asked = [(e, h.prompt) for e in edits for h in e.held_out if h.in_chat == in_chat]
        if not asked:
            continue
        prompts = sorted({p for _, p in asked})
        answers = dict(zip(prompts, greedy_answers(model, tokenizer, prompts, max_new_tokens=tokens), strict=True))
        out += [Check(e.request_id, "held_out_acc", p, e.target_new, answers[p], 0.0, 0.0,
                      names_held_out(answers[p], e.acceptable or [e.target_new], in_chat)) for e, p in asked]
    return out


def names_held_out(answer: str, acceptable: list[str], in_chat: bool) -> bool:
    """A chat answer names the value anywhere in its first sentence; a plain question's answer at its
    start, after the colon and blank lines an instruct model often puts first ("...? The answer
    is" -> ":\n\nParis is the capital of")."""
    if in_chat:
        return names_in_sentence(answer, acceptable) is not None
    return answer_matches(answer.lstrip(" :\n"), acceptable) is not None


def save_checks(s: Session, batch_id: int, checks: list[Check], phase: str, version_id: int | None) -> None:
    for c in checks:
        s.add(EditCheck(batch_id=batch_id, request_id=c.request_id, phase=phase, kind=c.kind,
                        prompt=c.prompt, expected=c.expected, rival=c.rival, logprob_expected=c.logprob_expected,
                        logprob_rival=c.logprob_rival, passed=c.passed, model_version_id=version_id))
