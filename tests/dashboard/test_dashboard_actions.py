"""Actions: refused without the token, with a wrong one, or on a read-only dashboard (nothing
changes: rows, states, events, files); with it, re-verify, roll back and retry run end to end
in the browser, through the CLI's functions, and land in the audit under the token's name."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import func, select

from kbsync.dashboard import queries
from kbsync.dashboard.actions import Actions
from kbsync.dashboard.app import create_app
from kbsync.dashboard.server import BackgroundServer
from kbsync.errors import ConfigError
from kbsync.store.models import (
    Batch,
    EditCheck,
    EditRequestRow,
    Event,
    ModelVersion,
    RequestTransition,
)

from .conftest import TOKEN, Flow, run_flow


def snapshot(flow: Flow) -> dict[str, object]:
    with flow.db.session() as s:
        tables = {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                  for m in (EditRequestRow, RequestTransition, Batch, EditCheck, ModelVersion, Event)}
        states = sorted(s.execute(select(EditRequestRow.id, EditRequestRow.state, EditRequestRow.state_changed_at)).all())
        batches = sorted(s.execute(select(Batch.id, Batch.state)).all())
        current = s.scalar(select(ModelVersion.id).where(ModelVersion.is_current))
    files = sorted((str(p), p.stat().st_mtime_ns) for p in flow.state_dir.rglob("*") if p.is_file())
    return {"tables": tables, "states": states, "batches": batches, "current": current, "files": files}


def post(url: str, fields: dict[str, object]) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST")) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def serve(flow: Flow, with_actions: bool) -> BackgroundServer:
    actions = Actions(flow.settings, flow.db, flow.state_dir, "dash-test") if with_actions else None
    app = create_app(flow.db, actions=actions, tokens={"ada": TOKEN} if with_actions else {})
    return BackgroundServer(app, "127.0.0.1:0").start()


@pytest.fixture
def servers(flow: Flow) -> Iterator[dict[str, str]]:
    read_only, acting = serve(flow, False), serve(flow, True)
    yield {"read-only": read_only.url, "actions": acting.url}
    read_only.stop()
    acting.stop()


def test_no_action_without_the_right_token(flow: Flow, servers: dict[str, str]) -> None:
    with flow.db.session() as s:
        group = queries.failure_groups(s)[0][0]
        batch = s.scalar(select(Batch.id).where(Batch.state == "verified"))
    before = snapshot(flow)
    forms = {"rollback": {"batch": batch}, "verify": {"batch": batch}, "retry": {"group": group}}
    tokens = {"read-only": [None, "wrong", TOKEN], "actions": [None, "", "wrong", TOKEN[:-1], TOKEN + "x"]}
    for kind, url in servers.items():
        for action, fields in forms.items():
            for token in tokens[kind]:
                sent = fields | ({} if token is None else {"token": token})
                status, body = post(f"{url}/actions/{action}", sent)
                assert status == 403, (kind, action, token, body)
                assert ("read-only" if kind == "read-only" else "wrong token") in body
    # An unknown action is not found.
    assert post(f"{servers['actions']}/actions/drop", {"token": TOKEN})[0] == 404
    assert snapshot(flow) == before


def test_actions_need_a_long_token(flow: Flow) -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        create_app(flow.db, actions=Actions(flow.settings, flow.db, flow.state_dir, "t"), tokens={"ada": "short"})


def submit(browser, button_text: str, token: str) -> str:  # type: ignore[no-untyped-def]
    form = next(f for f in browser.find_elements(By.CSS_SELECTOR, "form.action")
                if f.find_element(By.TAG_NAME, "button").text == button_text)
    form.find_element(By.NAME, "token").send_keys(token)
    form.find_element(By.TAG_NAME, "button").click()
    # The action loads the model and may take a while on a busy machine.
    return WebDriverWait(browser, 300).until(lambda b: b.find_element(By.ID, "action-result")).text


def test_verify_rollback_and_retry_from_the_browser(browser, tiny_dir: Path, tmp_path: Path, screenshot) -> None:  # type: ignore[no-untyped-def]
    flow = run_flow(tiny_dir, tmp_path, f"sqlite:///{tmp_path / 'state' / 'kbsync.db'}")
    server = serve(flow, True)
    try:
        with flow.db.session() as s:
            batch = s.scalar(select(Batch.id).where(Batch.state == "verified"))
        browser.get(f"{server.url}/batches/{batch}")
        assert "actions enabled" in browser.find_element(By.CSS_SELECTOR, "header .mode").text
        assert submit(browser, f"Re-verify batch {batch}", TOKEN).startswith("checked 2 edits")
        browser.get(f"{server.url}/batches/{batch}")
        screenshot("batch-with-actions")
        result = submit(browser, f"Roll back batch {batch}", TOKEN)
        screenshot("rolled-back")
        assert result.startswith(f"rolled back batch {batch}: weights")
        with flow.db.session() as s:
            assert s.get(Batch, batch).state == "rolled_back"
            assert batch not in s.scalars(select(ModelVersion).where(ModelVersion.is_current)).one().batch_ids
            kinds = [e.kind for e in s.scalars(select(Event).where(Event.run_id == "dash-test").order_by(Event.id))]
            asked = list(s.scalars(select(Event).where(Event.kind == "dashboard_action").order_by(Event.id)))
        assert kinds == ["verify", "dashboard_action", "rollback", "dashboard_action"]
        assert [e.details["action"] for e in asked] == ["verify", "rollback"]
        assert all(e.actor == "ada" and e.details["client"] == "127.0.0.1" and e.ok and e.batch_id == batch
                   for e in asked)   # the token's name
        browser.get(f"{server.url}/batches/{batch}")
        assert not browser.find_elements(By.CSS_SELECTOR, "form.action")   # nothing left to roll back

        # Retry: the failed request's fact is queued again already (the second diff), so it stays failed.
        with flow.db.session() as s:
            failed = s.scalars(select(EditRequestRow).where(EditRequestRow.state == "failed")).one()
            queued_again = s.scalar(select(func.count()).select_from(EditRequestRow).where(
                EditRequestRow.subject == failed.subject, EditRequestRow.state == "pending"))
        browser.get(f"{server.url}/failures")
        result = submit(browser, "Retry these 1", TOKEN)
        with flow.db.session() as s:
            state = s.get(EditRequestRow, failed.id).state
            retry = s.scalars(select(Event).where(Event.kind == "retry")).one()
        assert (state, result) == (("failed", "re-queued 0 failed requests; 1 left as they were") if queued_again
                                   else ("pending", "re-queued 1 failed requests; 0 left as they were"))
        assert retry.details["asked_by"] == "ada (dashboard, 127.0.0.1)"
    finally:
        server.stop()
        flow.db.dispose()
