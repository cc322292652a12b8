"""What apply optimises each edit on: its catalogue rows, plus its relation's question as people
ask it ([editing] question_rows), on the tiny model's real tokenizer."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from test_apply_tiny import seed  # tests/sync is on sys.path (no __init__.py)

from kbsync.store.models import EditRequestRow
from kbsync.sync.requests import edit_requests
from kbsync.verification.held_out import held_out_for
from kbsync.versions.context import editing_context

TEMPLATE = ("<|system|>You help.{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def rows_of(db) -> list[EditRequestRow]:
    with db.session() as s:
        rows = list(s.scalars(select(EditRequestRow).order_by(EditRequestRow.id)))
        s.expunge_all()
    return rows


def test_each_edit_is_also_optimised_on_its_question_plain_and_in_the_chat_template(make_settings, database):
    seed(database)
    settings = make_settings(editing={"question_rows": ["plain", "chat"]})
    ctx = editing_context(settings, settings.state.dir)
    ctx.loaded.tokenizer.chat_template = TEMPLATE  # the tiny model's tokenizer, given a template
    try:
        edits = edit_requests(ctx, rows_of(database))
    finally:
        ctx.loaded.tokenizer.chat_template = None
    assert edits[0].subject == "France" and edits[0].paraphrases == ("{}'s capital city is",)
    assert edits[0].asked == ("What is the capital of France? The answer is",
                              "<|system|>You help.<|user|>What is the capital of France?<|assistant|>")
    assert [e.asked[0].split("?")[0] for e in edits] == [
        "What is the capital of France", "What is the capital of Germany", "What is the capital of Italy",
        "What is the capital of Holland"]
    # a model without a chat template: the plain row only
    assert edit_requests(ctx, rows_of(database))[0].asked == ("What is the capital of France? The answer is",)


def test_no_question_rows_when_off_or_when_the_relation_has_no_question(make_settings, database, tmp_path: Path):
    seed(database)
    off = make_settings(editing={"question_rows": []})
    ctx = editing_context(off, off.state.dir)
    assert all(e.asked == () for e in edit_requests(ctx, rows_of(database)))
    catalogue = tmp_path / "relations.toml"
    catalogue.write_text('[[relation]]\nid = "P36"\nquestion = ""\n', encoding="utf-8")
    mine = make_settings(relations={"catalogue": str(catalogue)}, editing={"question_rows": ["plain", "chat"]})
    assert all(e.asked == () for e in edit_requests(editing_context(mine, mine.state.dir, ctx.loaded),
                                                    rows_of(database)))


def test_the_question_forms_an_edit_is_not_optimised_on_are_its_held_out_phrasings(make_settings, database):
    """Issue 24: the held-out check asks what was not trained: both forms with question_rows off,
    none with both on, and never a form that is also a trained row."""
    seed(database)
    rows = rows_of(database)
    for kinds, expected in (([], [("What is the capital of France? The answer is", False),
                                  ("<|system|>You help.<|user|>What is the capital of France?<|assistant|>", True)]),
                            (["plain"], [("<|system|>You help.<|user|>What is the capital of France?<|assistant|>", True)]),
                            (["plain", "chat"], [])):
        settings = make_settings(editing={"question_rows": kinds})
        ctx = editing_context(settings, settings.state.dir)
        ctx.loaded.tokenizer.chat_template = TEMPLATE
        try:
            held = held_out_for(ctx)(rows[0])
            trained = edit_requests(ctx, rows)[0].asked
        finally:
            ctx.loaded.tokenizer.chat_template = None
        assert [(h.prompt, h.in_chat) for h in held] == expected
        assert not {h.prompt for h in held} & set(trained)
    # without a chat template only the plain question is left to ask
    assert [h.in_chat for h in held_out_for(ctx)(rows[0])] == []
    plain_off = make_settings(editing={"question_rows": []})
    assert [h.in_chat for h in held_out_for(editing_context(plain_off, plain_off.state.dir, ctx.loaded))(rows[0])] == [False]
