"""`kbsync retry` (and the dashboard's retry action): failed → pending, unless the fact moved on."""

from __future__ import annotations

import json

from sqlalchemy import select

from kbsync.config import Settings
from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow, Event, KbFact, RequestTransition
from kbsync.store.states import RequestState
from kbsync.store.transitions import enqueue, move_request
from kbsync.sync.retry import retry_failed


def failed_request(s, subject: str, target: str, content_hash: str = "h") -> int:  # type: ignore[no-untyped-def]
    row = enqueue(s, EditRequestRow(subject=subject, relation="P36", subject_label=subject, prompt="The capital of {} is",
                                    target_new=target, target_new_id=f"X{target}", target_old="old", acceptable=[target],
                                    paraphrases=[], content_hash=content_hash), "test")
    move_request(s, row, RequestState.FAILED, "batch 1 below thresholds")
    s.flush()
    return row.id


def test_retry_requeues_only_what_the_kb_still_says(db_url: str) -> None:
    store_db.upgrade(db_url)
    db = store_db.open_database(db_url)
    with db.session() as s:
        plain = failed_request(s, "Q1", "Paris")
        stale = failed_request(s, "Q2", "Rome", content_hash="old")
        s.add(KbFact(subject="Q2", relation="P36", subject_label="Q2", objects=["XMadrid"], labels={},
                     content_hash="new"))
        shadowed = failed_request(s, "Q3", "Tokyo")
        enqueue(s, EditRequestRow(subject="Q3", relation="P36", subject_label="Q3", prompt="{}", target_new="Kyoto",
                                  target_new_id="XKyoto", target_old="old", acceptable=[], paraphrases=[],
                                  content_hash="h2"), "newer KB value")
    report = retry_failed(db, [plain, stale, shadowed, 999], run_id="r", asked_by="Ada")
    assert report.requeued == [plain]
    assert report.skipped == {stale: "the KB changed since this request was queued",
                              shadowed: f"request {shadowed + 1} for the same fact is already queued",
                              999: "no such request"}
    with db.session() as s:
        assert s.get(EditRequestRow, plain).state == "pending"
        last = s.scalars(select(RequestTransition).where(RequestTransition.request_id == plain)
                         .order_by(RequestTransition.id.desc())).first()
        assert (last.from_state, last.to_state, last.reason) == ("failed", "pending", "retry asked by Ada")
        event = s.scalars(select(Event).where(Event.kind == "retry")).one()
        assert event.details["requeued"] == [plain] and event.details["asked_by"] == "Ada"
    again = retry_failed(db, [plain], run_id="r")
    assert again.requeued == [] and again.skipped == {plain: "is pending, not failed"}
    db.dispose()


def test_retry_command(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store_db.upgrade(url)
    db = store_db.open_database(url)
    with db.session() as s:
        rid = failed_request(s, "Q1", "Paris")
    db.dispose()
    env = {"KBSYNC_DATABASE__URL": url, "KBSYNC_STATE__DIR": str(tmp_path / "state")}
    assert run_cli("retry", env=env).exit_code == 2                      # ids or --all
    out = run_cli("retry", "--all", "--json", env=env)
    assert out.exit_code == 0, out.err
    assert json.loads(out.out) == {"requeued": [rid], "skipped": {}}


def test_dashboard_token_is_masked() -> None:
    settings = Settings.model_validate({"dashboard": {"token": "a-very-secret-token-123"}})
    assert settings.masked()["dashboard"]["token"] == "***"
    assert Settings().masked()["dashboard"]["token"] == ""
