"""docs/audit-sql.md's SQL runs as written, on SQLite and PostgreSQL, and answers its question."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import text

from kbsync.sources.fact import Fact
from kbsync.store import db as store_db
from kbsync.store import snapshot
from kbsync.store.models import EditRequestRow
from kbsync.store.states import RequestState
from kbsync.store.transitions import enqueue, move_request
from kbsync.sync.apply import apply_pending
from kbsync.sync.from_settings import model_writer
from kbsync.verification import damage
from kbsync.verification.damage import Harm

AUDIT_SQL = Path(__file__).resolve().parents[2] / "docs" / "audit-sql.md"


def as_json(value: object) -> object:
    """A JSON column read through plain SQL: text on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def readme_queries() -> dict[str, str]:
    blocks = re.findall(r"```sql\n(.*?)```", AUDIT_SQL.read_text(encoding="utf-8"), re.S)
    return {b.splitlines()[0].removeprefix("-- ").strip(): b for b in blocks}


def test_readme_has_the_audit_queries() -> None:
    assert {"the history of one fact: every state change with its reason", "what batch N changed",
            "failures by reason"} <= set(readme_queries())


def test_audit_sql_runs_as_written(make_settings, db_url: str) -> None:
    settings = make_settings(db_url=db_url)
    store_db.upgrade(db_url)
    db = store_db.open_database(db_url)
    with db.session() as s:
        for qid, label, new, old in [("Q142", "France", "Berlin", "Paris"), ("Q183", "Germany", "Rome", "Berlin")]:
            enqueue(s, EditRequestRow(subject=qid, relation="P36", subject_label=label, prompt="The capital of {} is",
                                      target_new=new, target_new_id=f"X{new}", target_old=old, acceptable=[new],
                                      paraphrases=[], content_hash=qid), "test")
        bad = enqueue(s, EditRequestRow(subject="Q38", relation="P36", subject_label="Italy", prompt="The capital of {} is",
                                        target_new="Oslo", target_new_id="XO", target_old="Rome", acceptable=["Oslo"],
                                        paraphrases=[], content_hash="Q38"), "test")
        move_request(s, bad, RequestState.FAILED, "operator: wrong KB value")
        # the snapshot: Paris current, Versailles ended; then a change to Lyon still settling
        paris = Fact("Q142", "P36", ("Q90",), "France", object_labels={"Q90": "Paris", "Q621": "Versailles"},
                     target="Q90", stale=("Q621",),
                     why={"Q90": {"status": "current", "rank": "preferred", "start": None, "end": None},
                          "Q621": {"status": "ended", "rank": "normal", "start": "1682-05-06T00:00:00Z",
                                   "end": "1789-10-06T00:00:00Z"}})
        snapshot.save(s, [paris])
        lyon = Fact("Q142", "P36", ("Q456",), "France", object_labels={"Q456": "Lyon"})
        snapshot.save(s, [lyon], held=[lyon])
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    report = apply_pending(model_writer(settings, db, settings.state.dir, run_id="r", worker="w"), batch_size=2)
    batch = report.batches[0].batch_id
    with db.session() as s:  # a fact the batch broke (as apply or diff records it)
        damage.record(s, batch, [Harm("Q38", "P36", "Italy", "The capital of Italy is", "Rome", "Oslo", "diff")],
                      version_id=None, run_id="r")
    params = {"subject": "Q142", "relation": "P36", "batch": batch, "request": 1}
    queries = readme_queries()
    with db.engine.connect() as conn:
        results = {q: conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql}).all()
                   for q, sql in queries.items()}
    history = results["the history of one fact: every state change with its reason"]
    assert [r.to_state for r in history] == ["pending", "claimed", "applied", "verified"]
    changed = results["what batch N changed"]
    assert {r.subject_label for r in changed} == {"France", "Germany"}
    assert [tuple(r) for r in results["failures by reason"]] == [("operator: wrong KB value", 1)]
    why = results["why kbsync picked this value: each value's status (current, ended, superseded), rank, start, end"]
    assert as_json(why[0].why)["Q621"]["status"] == "ended"
    settling = results["changes the KB shows but that have not yet held for [kb] settle_s"]
    assert [as_json(r.settling_objects) for r in settling] == [{"Q456": "Lyon"}]
    damaged = results["what batch N damaged: facts right before it, wrong after it, who found them, what became of them"]
    assert [tuple(r) for r in damaged] == [("Italy", "P36", "Rome", "Oslo", "diff", "open")]
    gate = results["the regression gate's figures: the base model, then each batch it judged"]
    assert [r.scope for r in gate][:2] == ["base", "batch"] and gate[1].batch_id == batch and gate[0].perplexity > 0
    assert all(results[q] for q in queries)
    db.dispose()
