"""Prometheus metrics of the daemon, served over HTTP ([metrics] enabled, bind; loopback by default).

Two kinds, so that every number can be checked against SQL:
- counters of what this process did, added from each tick's report
  (facts read/probed, requests queued/applied/failed, batches, ticks, tick duration);
- gauges read from the database after each tick (queue sizes by state, batches by state,
  rollbacks, KB facts, the last successful tick), so they match `kbsync status --json`
  even across restarts. A scrape never touches the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)

from kbsync import __version__
from kbsync.errors import ConfigError
from kbsync.logs import get_logger

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from kbsync.config import GateSettings
    from kbsync.daemon.tick import TickReport
    from kbsync.store.db import Database

log = get_logger(__name__)

TICK_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, float("inf"))  # seconds


def parse_bind(bind: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464' or ':9464' (all interfaces) -> (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"[metrics] bind {bind!r} is not host:port; e.g. 127.0.0.1:9464 or [::1]:9464")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def unix_time(iso: str) -> float:
    """An ISO time from the database as Unix time; SQLite returns UTC without a zone."""
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        Info("kbsync", "kbsync build", registry=r).info({"version": __version__})
        self.facts_read = Counter("kbsync_facts_read", "Facts read from the KB by this daemon's ticks.", registry=r)
        self.facts_probed = Counter("kbsync_facts_probed", "Facts whose model answer was probed.", registry=r)
        self.requests_queued = Counter("kbsync_requests_queued", "Edit requests queued (new or superseding).", registry=r)
        self.requests_applied = Counter("kbsync_requests_applied", "Edit requests applied and verified.", registry=r)
        self.requests_failed = Counter("kbsync_requests_failed", "Edit requests that failed verification.", registry=r)
        self.batches = Counter("kbsync_batches", "MEMIT batches run (verified or failed).", registry=r)
        self.ticks = Counter("kbsync_ticks", "Ticks run, by result.", ["result"], registry=r)
        self.tick_seconds = Histogram("kbsync_tick_duration_seconds", "Duration of a tick.", buckets=TICK_BUCKETS,
                                      registry=r)
        self.last_success = Gauge("kbsync_last_success_timestamp_seconds",
                                  "Unix time of the last successful tick (database; 0: never).", registry=r)
        self.queue = Gauge("kbsync_queue_requests", "Edit requests by state (database).", ["state"], registry=r)
        self.batch_states = Gauge("kbsync_batches_in_state", "Batches by state (database).", ["state"], registry=r)
        self.rollbacks = Gauge("kbsync_rollbacks", "Batches rolled back (database).", registry=r)
        self.kb_facts = Gauge("kbsync_kb_facts", "Facts in the KB snapshot (database).", registry=r)
        self.gate = Gauge("kbsync_gate_figure", "Regression gate figures of the base model and the current version "
                          "(database; perplexity, known_acc, retention).", ["model", "figure"], registry=r)
        self.damaged = Gauge("kbsync_damaged_facts", "Facts a batch broke, by state (database; open = flagged, "
                             "not queued).", ["state"], registry=r)
        self.flagged = Gauge("kbsync_flagged_batches", "Applied batches with open damage (database).", registry=r)
        self.saturated = Gauge("kbsync_saturated", "1 when the regression gate refused the last apply's batches for "
                               "lack of room and nothing was published (database; 0: room).", registry=r)
        self.headroom = Gauge("kbsync_headroom", "The current version's figures against the gate's bounds (database): "
                              "known_acc and its floor, perplexity and its ceiling, retention and its floor, "
                              "edits_applied.", ["figure"], registry=r)
        self.holds = Gauge("kbsync_fact_holds", "Facts held from the queue, by kind (database; rolled_back, failed, "
                           "poison, refused).", ["kind"], registry=r)
        self.healthy = Gauge("kbsync_healthy", "1 while the daemon reaches its database; 0 while it backs off and "
                             "retries (kbsync_unhealthy says why).", registry=r)
        self.unhealthy = Gauge("kbsync_unhealthy", "1, labelled with the reason, while the daemon is unhealthy.",
                               ["reason"], registry=r)
        self.outages = Counter("kbsync_database_outages", "Periods the daemon could not reach its database.",
                               registry=r)
        self.healthy.set(1)
        self._healthy = True
        for result in ("ok", "failed", "interrupted"):
            self.ticks.labels(result)
        self._server: WSGIServer | None = None

    def set_health(self, healthy: bool, reason: str) -> None:
        if not healthy and self._healthy:   # a new period begins
            self.outages.inc()
        self._healthy = healthy
        self.healthy.set(1 if healthy else 0)
        self.unhealthy.clear()
        if not healthy:
            self.unhealthy.labels(reason[:200]).set(1)

    def observe_tick(self, report: TickReport) -> None:
        c = report.counts
        self.facts_read.inc(c["read"])
        self.facts_probed.inc(c["probed"])
        self.requests_queued.inc(c["queued"])
        self.requests_applied.inc(c["applied"])
        self.requests_failed.inc(c["failed"])
        self.batches.inc(c["batches"])
        self.ticks.labels("interrupted" if report.interrupted else "ok" if report.ok else "failed").inc()
        self.tick_seconds.observe(report.seconds)

    def refresh(self, db: Database, gate: GateSettings | None = None) -> None:
        """Set the gauges from the database (after each tick, and at start-up)."""
        from kbsync.store.status import status

        data = status(db, gate=gate)
        for state, n in data["queue"].items():
            self.queue.labels(state).set(n)
        for state, n in data["batches"].items():
            self.batch_states.labels(state).set(n)
        self.rollbacks.set(data["batches"].get("rolled_back", 0))
        self.kb_facts.set(data["kb_facts"])
        for model in ("base", "current"):
            figures = data["gate"][model] or {}
            for figure in ("perplexity", "known_acc", "retention"):
                value = figures.get(figure)
                self.gate.labels(model, figure).set(float("nan") if value is None else value)
        for state, n in data["damage"]["facts"].items():
            self.damaged.labels(state).set(n)
        self.flagged.set(len(data["damage"]["flagged_batches"]))
        self.saturated.set(1 if data["capacity"]["state"] == "saturated" else 0)
        for figure, value in data["capacity"]["headroom"].items():
            self.headroom.labels(figure).set(float("nan") if value is None else value)
        for kind, n in data["holds"].items():
            self.holds.labels(kind).set(n)
        at = data["last_successful_tick_at"]
        self.last_success.set(unix_time(at) if at else 0)

    def serve(self, bind: str) -> tuple[str, int]:
        """Start the HTTP endpoint in a thread; returns the (host, port) it listens on."""
        host, port = parse_bind(bind)
        try:
            self._server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {bind} ({exc.strerror or exc}); "
                              "fix [metrics] bind or free the port") from exc
        actual = self._server.server_address[1]
        log.info("metrics_serving", url=f"http://{bind.rpartition(':')[0] or '0.0.0.0'}:{actual}/metrics")
        return host, actual

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
