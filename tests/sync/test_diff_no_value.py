"""diff on a KB that now says "no value" (a preferred wdno: statement: the office is vacant):
nothing is probed or taught, the pending request for the former holder is withdrawn, and the
change is reported for review (a `review` row, a kb_no_value event naming the former holder)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from kbsync.sources.catalogue import load_catalogue
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.store.models import EditRequestRow, Event, KbFact
from kbsync.store.queue import enqueue_edit
from kbsync.sync.diff import DiffOptions, run_diff

EDGES = Path(__file__).resolve().parents[1] / "data" / "wikidata" / "edges.ttl"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
VACANT = "wds:Q92000001-vacant a wikibase:Statement, wdno:P35 ; wikibase:rank wikibase:PreferredRank ;"


def no_model():  # type: ignore[no-untyped-def]
    raise AssertionError("a 'no value' fact must not load the model")


def test_preferred_no_value_is_reported_for_review_not_taught(database, tmp_path: Path) -> None:
    text = EDGES.read_text()
    before = tmp_path / "before.ttl"
    before.write_text(text.replace(VACANT, "wds:Q92000001-vacant a wikibase:Statement ;"))
    catalogue = load_catalogue()
    options = DiffOptions(relations=["P35"], snapshot_only=True, work_dir=tmp_path, run_id="r1")
    run_diff(database, RdfFileSource([before], options=ReadOptions(as_of=NOW)), catalogue, no_model, options)
    with database.session() as s:
        assert s.scalars(select(KbFact.objects)).one() == ["Q92000013"]
        enqueue_edit(s, EditRequestRow(subject="Q92000013", relation="P35", subject_label="Testland",
                                       prompt="The head of state of {} is", target_new="Carol Chen",
                                       target_new_id="Q92000013", target_old="Alice", acceptable=["Carol Chen"],
                                       paraphrases=[], content_hash="h"), "model answered 'Alice'")
        enqueue_edit(s, EditRequestRow(subject="Q92000001", relation="P35", subject_label="Testland",
                                       prompt="The head of state of {} is", target_new="Carol Chen",
                                       target_new_id="Q92000013", target_old="Alice", acceptable=["Carol Chen"],
                                       paraphrases=[], content_hash="h"), "model answered 'Alice'")
    dry = run_diff(database, RdfFileSource([EDGES], options=ReadOptions(as_of=NOW)), catalogue, no_model,
                   DiffOptions(relations=["P35"], dry_run=True, work_dir=tmp_path, run_id="r2"))
    assert (dry.changed, dry.review, dry.probed) == (1, 1, 0)
    report = run_diff(database, RdfFileSource([EDGES], options=ReadOptions(as_of=NOW)), catalogue, no_model,
                      DiffOptions(relations=["P35"], work_dir=tmp_path, run_id="r3"))
    assert (report.changed, report.review, report.probed, report.queued) == (1, 1, 0, 0)
    assert [(r.subject, r.action) for r in report.rows] == [("Q92000001", "review")]
    with database.session() as s:
        assert s.scalars(select(KbFact.objects)).one() == []
        states = dict(s.execute(select(EditRequestRow.subject, EditRequestRow.state)).all())
        assert states == {"Q92000001": "superseded", "Q92000013": "pending"}
        event = s.scalars(select(Event).where(Event.kind == "kb_no_value")).one()
        assert event.details["former"] == ["Carol Chen"] and event.details["needs_review"] is True
