"""What the pages say, on a small seeded database with the rows that issue 25 found missing or
raw: the regression gate on the timeline, the facts a batch damaged, a fact's ended values, its
hold (and the release action), the model version that answered, the model's room for edits,
and event details written for a reader."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.config import Settings
from kbsync.dashboard.actions import Actions
from kbsync.dashboard.app import create_app
from kbsync.dashboard.server import BackgroundServer
from kbsync.store import capacity
from kbsync.store import db as store_db
from kbsync.store.models import (
    Batch,
    DamagedFact,
    EditRequestRow,
    Event,
    FactHold,
    GateFigures,
    KbFact,
    ModelVersion,
    Probe,
)

FIXTURE = Path(__file__).resolve().parents[2] / "benchmarks" / "dashboard_fixture.py"
TOKEN = "s3cret-token-for-tests-0123456789"
EVENT = {"host": "h", "pid": 1, "kbsync_version": "0", "config_hash": "", "run_id": "t", "actor": "root"}


@dataclass
class Seeded:
    db: store_db.Database
    url: str
    batch: int            # a verified batch with gate figures and a damaged fact
    subject: str          # a fact of that batch: held, with an ended value and three probes
    relation: str
    versions: tuple[int, int]   # a version with edits, one with none (everything rolled back)


def seed(db: store_db.Database) -> tuple[int, str, str, tuple[int, int]]:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    with db.session() as s:
        batch = s.scalars(select(Batch).where(Batch.state == "verified").order_by(Batch.id)).first()
        row = s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id == batch.id)).first()
        subject, relation = row.subject, row.relation
        s.add(GateFigures(model_key="bench", setup="x", scope="batch", batch_id=batch.id, perplexity=6083.5245993114,
                          known_acc=0.8, n_known=5, retention=0.5, n_retention=2, passed=True,
                          reason="gate passed: perplexity 6083.52 is +4.8% over the previous"))
        s.add(DamagedFact(batch_id=batch.id, subject="Q424242", relation="P17", subject_label="Atlantis",
                          prompt="Atlantis is in", expected="Greece", answer="Paris", found_by="diff"))
        kb = s.scalars(select(KbFact).where(KbFact.subject == subject, KbFact.relation == relation)).one()
        (current,) = kb.objects
        kb.labels = kb.labels | {"object_labels": kb.labels["object_labels"] | {"Q999": "Oldtown"}}
        kb.why = {current: {"status": "current", "rank": "normal", "start": "2020-01-01T00:00:00Z", "end": None},
                  "Q999": {"status": "ended", "rank": "normal", "start": "1990-01-01T00:00:00Z",
                           "end": "2019-12-31T00:00:00Z"}}
        s.add(FactHold(subject=subject, relation=relation, content_hash=kb.content_hash, kind="rolled_back",
                       reason="rolled back by ada", batch_id=batch.id, model_key="bench", created_at=at))
        edited = ModelVersion(model_key="other", batch_ids=[batch.id], weights_sha256="a" * 64, reason="x",
                              created_at=at)
        emptied = ModelVersion(model_key="other", batch_ids=[], weights_sha256="b" * 64, reason="rollback of all",
                               created_at=at)
        s.add_all([edited, emptied])
        s.flush()
        first = s.scalar(select(ModelVersion.created_at).order_by(ModelVersion.created_at))
        probe = {"run_id": "t", "subject": subject, "relation": relation, "prompt": "p", "agrees": False,
                 "kb_logprob": -1.0, "answer_logprob": -0.5, "content_hash": "h"}
        s.add_all([Probe(**probe, answer="by-edited", model_version_id=edited.id, probed_at=at),
                   Probe(**probe, answer="by-emptied", model_version_id=emptied.id, probed_at=at),
                   Probe(**probe, answer="before-any-version", probed_at=first - timedelta(days=1)),
                   Probe(**probe, answer="unrecorded", probed_at=at)])
        s.add(Event(**EVENT, at=at, kind="tick", batch_id=None, ok=True,
                    details={"stopped": None, "why": "", "gate": "gate passed: all fine",
                             "efficacy": 0.8666666666666667, "dropped": [], "shares": {"paraphrase": 0.25}}))
        ids = edited.id, emptied.id
    return batch.id, subject, relation, ids


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    spec = importlib.util.spec_from_file_location("dashboard_fixture", FIXTURE)
    assert spec and spec.loader
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    url = f"sqlite:///{tmp_path / 'kbsync.db'}"
    fixture.build(url, requests=60, batches=4, seed=1)
    db = store_db.open_database(url)
    batch, subject, relation, versions = seed(db)
    settings = Settings.model_validate({"state": {"dir": str(tmp_path / "state")}, "database": {"url": url}})
    app = create_app(db, page_size=20, actions=Actions(settings, db, tmp_path / "state", "dash-test"),
                     tokens={"ada": TOKEN}, gate=settings.gate)
    server = BackgroundServer(app, "127.0.0.1:0").start()
    yield Seeded(db, server.url, batch, subject, relation, versions)
    server.stop()
    db.dispose()


def get(url: str) -> str:
    with urllib.request.urlopen(url) as r:
        return r.read().decode()


def post(url: str, fields: dict[str, object]) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST")) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def row_of(page: str, element_id: str) -> str:
    start = page.index(f'id="{element_id}"')
    return page[start:page.index("</tr>", start)]


def test_the_timeline_shows_the_regression_gate(seeded: Seeded) -> None:
    row = row_of(get(seeded.url + "/timeline"), f"batch-{seeded.batch}")
    assert "passed" in row and "perplexity 6083.5, known facts 0.80 of 5, retention 0.50 of 2" in row
    assert "not run" in row_of(get(seeded.url + "/timeline"), f"batch-{seeded.batch + 1}")


def test_the_batch_page_names_the_facts_it_damaged_and_its_gate(seeded: Seeded) -> None:
    page = get(f"{seeded.url}/batches/{seeded.batch}")
    damaged = page[page.index('id="damaged"'):]
    assert 'href="/facts/Q424242/P17"' in damaged and "Atlantis" in damaged
    assert "Greece" in damaged and "Paris" in damaged
    assert "perplexity 6083.5" in page[page.index('id="batch-gate"'):]


def test_the_fact_page_shows_ended_values_the_hold_and_who_answered(seeded: Seeded) -> None:
    page = get(f"{seeded.url}/facts/{seeded.subject}/{seeded.relation}")
    values = page[page.index('id="kb-values"'):page.index("</table>", page.index('id="kb-values"'))]
    assert "Oldtown (Q999)" in values and "ended" in values and "2019-12-31" in values
    hold = page[page.index('id="hold"'):page.index("</dl>", page.index('id="hold"'))]
    assert "rolled back" in hold and "rolled back by ada" in hold and "kbsync release" in hold
    assert "Release this fact" in page
    edited, emptied = seeded.versions
    answered = {a: page[page.index(a) - 400:page.index(a)] for a in
                ("by-edited", "by-emptied", "before-any-version", "unrecorded")}
    assert f"version {edited}<" in answered["by-edited"]
    assert f"version {emptied}, base weights" in answered["by-emptied"]
    assert ">base<" in answered["before-any-version"]
    assert "not recorded" in answered["unrecorded"]


def test_release_from_the_fact_page_is_audited_under_the_token_name(seeded: Seeded) -> None:
    fact = {"subject": seeded.subject, "relation": seeded.relation}
    assert post(f"{seeded.url}/actions/release", fact | {"token": "wrong"})[0] == 403
    status, body = post(f"{seeded.url}/actions/release", fact | {"token": TOKEN})
    assert status == 200 and f"released {seeded.subject} {seeded.relation} (rolled back)" in body
    status, body = post(f"{seeded.url}/actions/release", fact | {"token": TOKEN})
    assert status == 409 and "is not held" in body
    with seeded.db.session() as s:
        hold = s.scalars(select(FactHold)).one()
        asked = list(s.scalars(select(Event).where(Event.kind == "dashboard_action").order_by(Event.id)))
        release = s.scalars(select(Event).where(Event.kind == "release").order_by(Event.id)).first()
    assert (hold.state, hold.resolved_by) == ("released", "ada (dashboard, 127.0.0.1)")
    assert [(e.actor, e.ok, e.details["action"]) for e in asked] == [("ada", True, "release"), ("ada", False, "release")]
    assert release.details["asked_by"] == "ada (dashboard, 127.0.0.1)"
    assert "Not held" in get(f"{seeded.url}/facts/{seeded.subject}/{seeded.relation}")


def test_the_overview_shows_capacity_and_holds(seeded: Seeded) -> None:
    page = get(seeded.url + "/")
    card = page[page.index('id="capacity"'):page.index('id="holds"')]
    assert 'id="capacity-state">room<' in card and "known-fact accuracy" in card and "edits applied" in card
    assert 'data-hold="rolled_back">1<' in page
    with seeded.db.session() as s:
        capacity.mark(s, "bench", "saturated", "known-fact accuracy 0.70 < floor 0.80", version_id=None,
                      config_hash="", run_id="t")
    card = get(seeded.url + "/")
    assert 'id="capacity-state">saturated<' in card and "known-fact accuracy 0.70 &lt; floor 0.80" in card


def test_event_details_are_written_for_a_reader(seeded: Seeded) -> None:
    page = get(seeded.url + "/")
    cells = [cell for cell in page.split("<td") if "gate passed: all fine" in cell]
    assert len(cells) == 2                                  # the tick in "Last ticks" and in "Last events"
    for cell in cells:
        assert "efficacy 0.867" in cell and "shares (paraphrase 0.25)" in cell
        for raw in ("stopped", "null", "None", "why", "gate gate", "0.8666666666666667", "dropped", "{"):
            assert raw not in cell, (raw, cell)
