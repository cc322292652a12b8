"""Queued rows as MEMIT requests: what apply optimises each edit on.

An edit is optimised on its catalogue prompt and paraphrases (the rows it is then checked on)
and, per `[editing] question_rows`, on its relation's catalogue question as people ask it:

    plain   "Who is the head of government of Canada? The answer is"
    chat    the question as a user's turn in the model's chat template, the answer next
            (an instruct model served by llama.cpp, Ollama or vLLM is asked this way)

Each form of the question an edit is *not* optimised on is one of its held-out phrasings: a check
(held_out_acc, verification/held_out.py) of whether the edit is said as people ask it.

Apply and the re-solves (compaction, the rollback of a compacted batch) build their requests
here, so a compaction optimises every edit on the rows apply did.
"""

from __future__ import annotations

from collections.abc import Sequence

from kbsync.editing.request import EditRequest
from kbsync.model.tokens import question_forms
from kbsync.prompts import fill
from kbsync.sources.factory import open_catalogue
from kbsync.store.models import EditRequestRow
from kbsync.versions.context import EditingContext


def asked_rows(question: str, kinds: Sequence[str], tokenizer) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """The texts an edit is also optimised on for a filled `question` ("" gives none)."""
    return tuple(text for form, text in question_forms(tokenizer, question).items() if form in kinds)


def edit_requests(ctx: EditingContext, rows: Sequence[EditRequestRow]) -> list[EditRequest]:
    """One request per row, in order: its prompt and paraphrases, and its question's rows. A
    relation the catalogue no longer has (a user file changed since diff) gets no question rows."""
    kinds = ctx.settings.editing.question_rows
    catalogue = open_catalogue(ctx.settings) if kinds else None
    out = []
    for r in rows:
        question = catalogue[r.relation].question if catalogue is not None and r.relation in catalogue else ""
        out.append(EditRequest(prompt=r.prompt, subject=r.subject_label, target_new=r.target_new,
                               target_old=r.target_old, request_id=r.id, paraphrases=tuple(r.paraphrases),
                               asked=asked_rows(fill(question, r.subject_label), kinds, ctx.loaded.tokenizer)))
    return out

