"""Held-out phrasings: how each edit is asked as people ask it, in a form it was not optimised on.

Its relation's catalogue question, in each form (model/tokens.question_forms: plain, and in the
chat template) that [editing] question_rows does not train on (sync/requests.asked_rows). They
are checks (held_out_acc), asked on every edit and recorded; [verify] min_held_out_acc decides
how many must name the value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kbsync.model.tokens import question_forms
from kbsync.prompts import fill
from kbsync.sources.factory import open_catalogue
from kbsync.store.models import EditRequestRow
from kbsync.verification.checks import HeldOut
from kbsync.versions.context import EditingContext


def held_out_phrasings(question: str, trained: Sequence[str], tokenizer) -> list[HeldOut]:  # type: ignore[no-untyped-def]
    """The forms of a filled `question` that are not among the `trained` ones."""
    return [HeldOut(text, in_chat=form == "chat") for form, text in question_forms(tokenizer, question).items()
            if form not in trained]


def held_out_for(ctx: EditingContext) -> Callable[[EditRequestRow], list[HeldOut]]:
    """Each queued row's held-out phrasings, from the catalogue as it is now (a relation it no
    longer has gets none)."""
    catalogue, trained = open_catalogue(ctx.settings), ctx.settings.editing.question_rows

    def phrasings(row: EditRequestRow) -> list[HeldOut]:
        question = catalogue[row.relation].question if row.relation in catalogue else ""
        return held_out_phrasings(fill(question, row.subject_label), trained, ctx.loaded.tokenizer)
    return phrasings
