"""Dashboard actions on a small database (no model needed): what each must be told before it
changes anything, what it answers when it cannot, and what the audit records (issue 25)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.config import Settings
from kbsync.dashboard.app import app_from_settings
from kbsync.dashboard.server import BackgroundServer
from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow, Event
from kbsync.store.states import RequestState
from kbsync.store.transitions import enqueue, move_request

TOKEN = "s3cret-token-for-tests-0123456789"      # ada's
BOB = "bobs-own-token-0123456789abcdef"


@dataclass
class Board:
    db: store_db.Database
    url: str
    failed: dict[str, int]          # subject -> its failed request


def failed_request(s, subject: str, reason: str) -> int:  # type: ignore[no-untyped-def]
    row = enqueue(s, EditRequestRow(subject=subject, relation="P36", subject_label=subject, prompt="The capital of {} is",
                                    target_new="Paris", target_new_id="Q90", target_old="old", acceptable=["Paris"],
                                    paraphrases=[], content_hash="h"), "test")
    move_request(s, row, RequestState.FAILED, reason)
    s.flush()
    return row.id


def settings_for(tmp_path: Path, url: str, **dashboard: object) -> Settings:
    return Settings.model_validate({"state": {"dir": str(tmp_path / "state")}, "database": {"url": url},
                                    "dashboard": {"tokens": {"ada": TOKEN, "bob": BOB}} | dashboard})


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    url = f"sqlite:///{tmp_path / 'kbsync.db'}"
    store_db.upgrade(url)
    db = store_db.open_database(url)
    with db.session() as s:
        failed = {"Q1": failed_request(s, "Q1", "batch 3 below thresholds: efficacy 0.40 < 0.90"),
                  "Q2": failed_request(s, "Q2", "the editor ran out of memory")}
    settings = settings_for(tmp_path, url)
    server = BackgroundServer(app_from_settings(settings, db, tmp_path / "state", "dash-test", allow_actions=True),
                              "127.0.0.1:0").start()
    yield Board(db, server.url, failed)
    server.stop()
    db.dispose()


def post(url: str, fields: dict[str, object]) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST")) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def act(board: Board, action: str, **fields: object) -> tuple[int, str]:
    return post(f"{board.url}/actions/{action}", {"token": TOKEN} | fields)


def states(board: Board) -> dict[str, str]:
    with board.db.session() as s:
        return {r.subject: r.state for r in s.scalars(select(EditRequestRow).order_by(EditRequestRow.id))}


def test_retry_needs_an_explicit_scope(board: Board) -> None:
    status, body = act(board, "retry")                 # no group: not "every failed request"
    assert status == 400 and "scope=all" in body
    assert states(board) == {"Q1": "failed", "Q2": "failed"}
    with board.db.session() as s:
        assert not s.scalars(select(Event).where(Event.kind == "retry")).first()
    status, body = act(board, "retry", group="the editor ran out of memory")
    assert status == 200 and "re-queued 1 failed requests" in body
    assert states(board) == {"Q1": "failed", "Q2": "pending"}
    status, body = act(board, "retry", scope="all")
    assert status == 200 and "re-queued 1 failed requests" in body
    assert states(board) == {"Q1": "pending", "Q2": "pending"}


def test_the_failures_page_offers_retry_all_explicitly(board: Board) -> None:
    with urllib.request.urlopen(f"{board.url}/failures") as r:
        page = r.read().decode()
    assert 'name="scope" value="all"' in page and "Retry every failed request (2)" in page


@pytest.mark.parametrize("action", ["rollback", "verify"])
def test_an_unknown_batch_is_404_and_audited(board: Board, action: str) -> None:
    status, body = act(board, action, batch=999)
    assert status == 404, body
    assert "RollbackError: there is no batch 999" in body
    with board.db.session() as s:
        event = s.scalars(select(Event).where(Event.kind == "dashboard_action")).one()
    assert (event.ok, event.batch_id, event.details["action"], event.details["asked_batch"]) == (False, None, action, 999)
    assert event.details["result"].startswith("RollbackError: there is no batch 999")


def test_the_audit_names_the_token_not_a_typed_name(board: Board) -> None:
    """The actor is the name of the token presented; whatever a form says about who asks is ignored."""
    assert act(board, "rollback", batch=999, token=BOB, who="ada")[0] == 404
    assert act(board, "retry", group="the editor ran out of memory", who="bob")[0] == 200
    assert post(f"{board.url}/actions/retry", {"scope": "all", "token": "bobs-own-token-0123456789abcdeX"})[0] == 403
    with board.db.session() as s:
        asked = list(s.scalars(select(Event).where(Event.kind == "dashboard_action").order_by(Event.id)))
        retry = s.scalars(select(Event).where(Event.kind == "retry")).one()
    assert [(e.actor, e.details["action"], e.details["client"]) for e in asked] == \
        [("bob", "rollback", "127.0.0.1"), ("ada", "retry", "127.0.0.1")]
    assert retry.details["asked_by"] == "ada (dashboard, 127.0.0.1)"


def serve_settings(settings: Settings, tmp_path: Path) -> tuple[BackgroundServer, store_db.Database]:
    db = store_db.open_database(settings.database_url)
    app = app_from_settings(settings, db, tmp_path / "state", "dash-test", allow_actions=True)
    return BackgroundServer(app, "127.0.0.1:0").start(), db


def test_the_single_token_is_named_operator_and_a_file_adds_named_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kbsync.db'}"
    store_db.upgrade(url)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'carol = "{BOB}"\n', encoding="utf-8")
    settings = Settings.model_validate({"state": {"dir": str(tmp_path / "state")}, "database": {"url": url},
                                        "dashboard": {"token": TOKEN, "tokens_file": str(tokens)}})
    server, db = serve_settings(settings, tmp_path)
    try:
        for token in (TOKEN, BOB):
            assert post(f"{server.url}/actions/verify", {"batch": 7, "token": token})[0] == 404
        with db.session() as s:
            actors = list(s.scalars(select(Event.actor).where(Event.kind == "dashboard_action").order_by(Event.id)))
        assert actors == ["operator", "carol"]
    finally:
        server.stop()
        db.dispose()


def test_named_tokens_from_the_environment_are_masked() -> None:
    from kbsync.config import load_settings

    settings = load_settings(environ={"KBSYNC_DASHBOARD__TOKENS": f'{{ada = "{TOKEN}", bob = "{BOB}"}}'})
    assert settings.dashboard.tokens == {"ada": TOKEN, "bob": BOB}
    assert settings.masked()["dashboard"]["tokens"] == {"ada": "***", "bob": "***"}


@pytest.mark.parametrize(("dashboard", "problem"), [
    ({}, "need a token of at least 16 characters"),
    ({"tokens": {"ada": "short"}}, "token 'ada' has 5"),
    ({"tokens": {"ada": TOKEN, "bob": TOKEN}}, "'ada' and 'bob' share one secret"),
    ({"tokens": {"two words": TOKEN}}, "not a plain name"),
    ({"tokens": {"operator": BOB}, "token": TOKEN}, "token and \\[dashboard\\] tokens.operator differ"),
    ({"tokens_file": "/nonexistent/tokens.toml"}, "cannot read it"),
])
def test_action_tokens_are_checked_when_the_dashboard_starts(tmp_path: Path, dashboard: dict, problem: str) -> None:
    from kbsync.errors import ConfigError

    settings = Settings.model_validate({"state": {"dir": str(tmp_path / "state")}, "dashboard": dashboard})
    with pytest.raises(ConfigError, match=problem):
        app_from_settings(settings, None, tmp_path, "t", allow_actions=True)  # type: ignore[arg-type]
