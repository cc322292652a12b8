"""Every page answers on SQLite and PostgreSQL, on the seeded fixture (benchmarks/dashboard_fixture.py)
at a small size, with the figures SQL gives; pagination reaches the oldest rows."""

from __future__ import annotations

import importlib.util
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kbsync.dashboard.app import create_app
from kbsync.dashboard.queries import reason_group
from kbsync.dashboard.server import (
    BackgroundServer,
    bound_socket,
    parse_bind,
    remote_warning,
    url_of,
)
from kbsync.errors import ConfigError
from kbsync.store import db as store_db
from kbsync.store.models import Batch, EditRequestRow, ModelVersion

FIXTURE = Path(__file__).resolve().parents[2] / "benchmarks" / "dashboard_fixture.py"


def load_fixture():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("dashboard_fixture", FIXTURE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def seeded(db_url: str) -> Iterator[tuple[store_db.Database, str]]:
    load_fixture().build(db_url, requests=600, batches=12, seed=1)
    db = store_db.open_database(db_url)
    server = BackgroundServer(create_app(db, page_size=5), "127.0.0.1:0").start()
    yield db, server.url
    server.stop()
    db.dispose()


def get(url: str) -> str:
    with urllib.request.urlopen(url) as r:
        assert r.status == 200
        return r.read().decode()


def test_every_page_on_both_databases(seeded) -> None:  # type: ignore[no-untyped-def]
    db, url = seeded
    with db.session() as s:
        pending = s.scalar(select(func.count()).select_from(EditRequestRow).where(EditRequestRow.state == "pending"))
        n_batches = s.scalar(select(func.count()).select_from(Batch))
        oldest = s.scalar(select(func.min(Batch.id)))
        request = s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id == oldest)).first()
        current = s.scalar(select(ModelVersion.id).where(ModelVersion.is_current))
    assert f'data-state="pending">{pending}<' in get(url + "/")
    assert f"version {current}" in get(url + "/")
    timeline = get(url + "/timeline")
    assert f"({n_batches} rows)" in timeline and "<svg" in timeline
    last = get(f"{url}/timeline?page={-(-n_batches // 5)}")
    assert f'id="batch-{oldest}"' in last
    batch = get(f"{url}/batches/{oldest}")
    assert f'id="edit-{request.id}"' in batch
    fact = get(f"{url}/facts/{request.subject}/{request.relation}")
    assert f'id="request-{request.id}"' in fact
    assert f"/facts/{request.subject}/{request.relation}" in urllib.request.urlopen(
        f"{url}/facts?q={request.subject}").url
    failures = get(url + "/failures")
    groups = re.findall(r'href="/failures\?group=([^"]+)">(\d+)<', failures)
    assert groups
    assert 'id="failed"' in get(f"{url}/failures?group={groups[0][0]}")
    assert f'id="v{current}"' in get(url + "/versions")


def test_reason_groups_blank_numbers() -> None:
    assert reason_group("batch 17 below thresholds: efficacy 0.40 < 0.90") == \
        reason_group("batch 3 below thresholds: efficacy 0.85 < 0.90") == "batch # below thresholds: efficacy # < #"


def test_bind_must_be_host_and_port() -> None:
    assert parse_bind("127.0.0.1:8765") == ("127.0.0.1", 8765) and parse_bind("[::1]:80") == ("::1", 80)
    assert parse_bind(":80") == ("127.0.0.1", 80)       # no host: this machine only, not every address
    with pytest.raises(ConfigError, match="not host:port"):
        parse_bind("localhost")


def test_a_bind_other_machines_can_reach_needs_allow_remote() -> None:
    with pytest.raises(ConfigError, match="listens on 0.0.0.0, which other machines can reach.*--allow-remote"):
        bound_socket("0.0.0.0:0")
    for bind, loopback in (("0.0.0.0:0", False), (":0", True), ("localhost:0", True)):
        sock = bound_socket(bind, allow_remote=True)
        try:
            url = url_of(sock)                       # the address it really listens on
            assert url.startswith("http://0.0.0.0:" if not loopback else "http://127.0.0.1:"), url
            assert bool(remote_warning(url)) is not loopback
        finally:
            sock.close()
