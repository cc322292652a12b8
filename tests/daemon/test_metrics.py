"""The Prometheus endpoint: every metric named in docs/operations.md, equal to what SQL says."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from kbsync.config import ConfigError
from kbsync.daemon.metrics import parse_bind, unix_time
from kbsync.store.models import Batch, EditRequestRow, Event
from kbsync.store.states import RequestState
from kbsync.store.status import status

from .conftest import (
    free_port,
    migrate,
    run_in_process,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.process  # starts kbsync processes: the third test tier

COUNTERS = {  # metric -> the tick-event count it sums
    "kbsync_facts_read_total": "read",
    "kbsync_facts_probed_total": "probed",
    "kbsync_requests_queued_total": "queued",
    "kbsync_requests_applied_total": "applied",
    "kbsync_requests_failed_total": "failed",
    "kbsync_batches_total": "batches",
}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def ticks_done(m: dict) -> float:  # type: ignore[type-arg]
    return sum(v for (name, _), v in m.items() if name == "kbsync_ticks_total")


def database_view(db) -> dict:  # type: ignore[no-untyped-def,type-arg]
    with db.session() as s:
        ticks = list(s.scalars(select(Event).where(Event.kind == "tick")))
        view = {
            "status": status(db),
            "ticks": len(ticks),
            "sums": {key: sum(t.details.get(key, 0) for t in ticks) for key in COUNTERS.values()},
            "seconds": sum(t.details["seconds"] for t in ticks),
            "verified": s.scalar(select(func.count()).select_from(EditRequestRow)
                                 .where(EditRequestRow.state == RequestState.VERIFIED.value)),
            "batches": s.scalar(select(func.count()).select_from(Batch)),
        }
    return view


def test_metrics_endpoint_matches_the_database_after_a_tick(tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    config = migrate(write_config(tmp_path / "kbsync.toml", tiny_model_dir, interval_s=2, steps=("diff", "apply"),
                                  batch_size=3, metrics_port=port))
    seen: dict[str, object] = {}

    def driver(daemon) -> None:  # type: ignore[no-untyped-def]
        wait_for(lambda: scrape(port).get(("kbsync_ticks_total", (("result", "ok"),))), 900, every=0.5,
                 what="a successful tick in the metrics")
        db = daemon.app.database()
        for _ in range(20):  # a consistent pair: no tick finished between the two scrapes
            before, view, after = scrape(port), database_view(db), scrape(port)
            if ticks_done(before) == ticks_done(after) == view["ticks"]:
                seen.update(metrics=after, view=view)
                return

    code, _ = run_in_process(config, driver)
    assert code == 0 and seen, "no consistent scrape"
    m, view = seen["metrics"], seen["view"]
    assert isinstance(m, dict) and isinstance(view, dict)
    st = view["status"]
    for state, n in st["queue"].items():
        assert m[("kbsync_queue_requests", (("state", state),))] == n, state
    for state, n in st["batches"].items():
        assert m[("kbsync_batches_in_state", (("state", state),))] == n, state
    assert m[("kbsync_rollbacks", ())] == st["batches"]["rolled_back"]
    assert m[("kbsync_kb_facts", ())] == st["kb_facts"]
    assert m[("kbsync_flagged_batches", ())] == len(st["damage"]["flagged_batches"])
    for state, n in st["damage"]["facts"].items():
        assert m[("kbsync_damaged_facts", (("state", state),))] == n, state
    for model in ("base", "current"):
        for figure in ("perplexity", "known_acc", "retention"):
            value = (st["gate"][model] or {}).get(figure)
            got = m[("kbsync_gate_figure", (("figure", figure), ("model", model)))]
            assert got == pytest.approx(value) if value is not None else got != got, (model, figure)
    assert m[("kbsync_last_success_timestamp_seconds", ())] == pytest.approx(unix_time(st["last_successful_tick_at"]))
    for metric, key in COUNTERS.items():
        assert m[(metric, ())] == view["sums"][key], metric
    assert m[("kbsync_requests_applied_total", ())] == view["verified"] >= 3
    assert m[("kbsync_batches_total", ())] == view["batches"]
    assert m[("kbsync_tick_duration_seconds_count", ())] == view["ticks"]
    assert m[("kbsync_tick_duration_seconds_sum", ())] == pytest.approx(view["seconds"], abs=0.01 * view["ticks"])
    assert m[("kbsync_facts_read_total", ())] >= 6 and m[("kbsync_requests_queued_total", ())] == 6


def test_metrics_bind_is_parsed_or_refused() -> None:
    assert parse_bind("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_bind("[::1]:9464") == ("::1", 9464)
    assert parse_bind(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(ConfigError, match=r"\[metrics\] bind"):
        parse_bind("localhost")
