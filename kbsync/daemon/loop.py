"""The daemon's work loop, rq-style, and its signals.

    take the daemon lock (one scheduler per database) → metrics, scheduler, READY=1
    loop: check stop → reload if asked → wait for a due tick (heartbeat) → run the tick
          (diff, then apply) → gauges from the database → heartbeat
          while the database is out of reach: unhealthy, ticks skipped, asked again with
          back-off (daemon/health.py), the outage recorded when it answers
    finally: STOPPING=1, scheduler and metrics down, lock released

Signals: SIGTERM/SIGINT go to the two-stage stop every writer shares (`kbsync.runtime.Stop`,
rq's warm and cold shutdown): the first finishes the batch being applied (or the diff being
run) and starts no further step; the second aborts the unit at its next stop check, giving a
batch's requests back to the queue. Exit 0 either way. Never mid-commit.
- SIGHUP: reload the config between ticks; a bad new config is logged and the old one kept.

`--once` (`kbsync run-once`) runs one tick under the same lock and signals, and returns its
exit code (0 when every step succeeded).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from kbsync.config import Settings
from kbsync.daemon.health import Health, database_answers, one_line
from kbsync.daemon.metrics import Metrics
from kbsync.daemon.notify import Heartbeat, Notifier
from kbsync.daemon.scheduler import TickScheduler, describe, trigger_for
from kbsync.daemon.tick import Steps, TickReport, run_tick
from kbsync.errors import ConfigError, LockedError
from kbsync.logs import configure_logging, get_logger
from kbsync.runtime import STOP_SIGNALS, App, Stop
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.locks import Held, held_lock

if TYPE_CHECKING:
    from kbsync.dashboard.server import BackgroundServer

log = get_logger(__name__)

DAEMON_LOCK = "kbsync-daemon"
RELOAD_NEEDS_RESTART = ("database", "state", "metrics", "dashboard")


class Shutdown:
    """The daemon's signals: stop requests (a `Stop`, handed to every step) and SIGHUP reloads."""

    def __init__(self, heartbeat: Heartbeat, notifier: Notifier) -> None:
        self.stop = Stop(on_request=self._on_stop)
        self.reload_requested = False
        self.heartbeat, self.notifier = heartbeat, notifier
        self._previous: dict[int, object] = {}

    @property
    def stage(self) -> int:
        return self.stop.stage

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self.stop.on_signal)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _on_stop(self, stage: int, name: str) -> None:
        if stage == 1:
            self.notifier.stopping("stopping: finishing the current batch")

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def beat(self) -> None:
        self.heartbeat.beat()


@contextlib.contextmanager
def daemon_lock(db: Database, state_dir: Path) -> Iterator[Held]:
    """One scheduler per database: a PostgreSQL advisory lock, or a lock file beside the SQLite file."""
    lock_dir = state_dir / "locks"
    name = DAEMON_LOCK
    if db.dialect == "sqlite":
        path = Path(make_url(db.url).database or "").resolve()
        lock_dir, name = path.parent, f"{DAEMON_LOCK}:{path}"
    try:
        with held_lock(db, name, lock_dir) as held:
            yield held
    except LockedError as exc:
        if "another kbsync process" not in str(exc):
            raise
        raise LockedError("another kbsync daemon or run-once already runs on this database; stop it first "
                          "(systemctl stop kbsync) or point this one at another [database] url") from None


class Daemon:
    def __init__(self, app: App, load_settings: Callable[[], Settings], *, notifier: Notifier | None = None) -> None:
        self.app = app
        self.load_settings = load_settings
        self.notifier = notifier or Notifier()
        self.heartbeat = Heartbeat()
        self.shutdown = Shutdown(self.heartbeat, self.notifier)
        self.steps = Steps(app)
        self.metrics: Metrics | None = None
        self.dashboard: BackgroundServer | None = None
        self.scheduler: TickScheduler | None = None
        self.health = Health(app.state_dir, listeners=[self._tell_health])
        self.lock: Held | None = None
        self._next_try = 0.0

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def run(self, once: bool = False) -> int:
        db = self.app.database()          # refuses a schema behind its migrations
        trigger_for(self.settings.schedule)  # a bad schedule fails before anything starts
        self.shutdown.install()
        try:
            with daemon_lock(db, self.app.state_dir) as self.lock:
                self.health.recovered()   # the health file says healthy: this daemon reached its database
                self._event("daemon_start", once=once)
                try:
                    return self._tick().exit_code if once else self._serve()
                finally:
                    self._event("daemon_stop", once=once, stage=self.shutdown.stage)
        finally:
            self.shutdown.restore()
            self.notifier.close()

    def _serve(self) -> int:
        s = self.settings
        if s.metrics.enabled:
            self.metrics = Metrics()
            self.metrics.refresh(self.app.database(), self.app.settings.gate)
            self.metrics.serve(s.metrics.bind)
        if s.dashboard.enabled:
            from kbsync.dashboard.app import app_from_settings
            from kbsync.dashboard.server import BackgroundServer, remote_warning

            web = app_from_settings(s, self.app.database(), self.app.state_dir, self.app.run_id,
                                    allow_actions=s.dashboard.allow_actions)
            self.dashboard = BackgroundServer(web, s.dashboard.bind, allow_remote=s.dashboard.allow_remote).start()
            log.info("dashboard_serving", url=self.dashboard.url + "/", actions=s.dashboard.allow_actions)
            if warning := remote_warning(self.dashboard.url):
                log.warning("dashboard_reachable_from_other_machines", url=self.dashboard.url + "/", warning=warning)
        self.scheduler = TickScheduler(s.schedule)
        self.scheduler.start()
        self.notifier.start_watchdog(self.heartbeat)
        idle_wait = min(1.0, self.notifier.watchdog_s / 4) if self.notifier.watchdog_s else 1.0
        self.notifier.ready(self._waiting())
        log.info("daemon_ready", schedule=describe(s.schedule), next_tick=str(self.scheduler.next_fire()),
                 steps=s.schedule.steps, watchdog_s=self.notifier.watchdog_s)
        try:
            while not self.shutdown.stage:
                self.heartbeat.beat()
                if self.shutdown.reload_requested:
                    self.reload()
                ticket = self.scheduler.next_ticket(timeout=idle_wait)
                if not self.health.healthy:
                    if ticket is not None:   # no tick while the database is out of reach
                        self.health.ticks_skipped += 1
                        ticket.set()
                    if time.monotonic() >= self._next_try:
                        self._check_database()
                    continue
                if ticket is None:
                    continue
                try:
                    if not self.shutdown.stage:
                        self._tick()
                finally:
                    ticket.set()
                skipped = self.scheduler.take_skipped()   # one line a tick, not a warning an interval
                if skipped and not self.shutdown.stage:
                    log.info("tick_outlasted_fire_times", skipped=skipped, note="skipped, not queued up",
                             next_tick=str(self.scheduler.next_fire()))
        finally:
            self.notifier.stopping()
            self.scheduler.shutdown()
            if self.metrics is not None:
                self.metrics.close()
            if self.dashboard is not None:
                self.dashboard.stop()
            log.info("daemon_stopped", stage=self.shutdown.stage)
        return 0

    def _tick(self) -> TickReport:
        self.notifier.status("tick running")
        report = run_tick(self.app, self.steps.named(self.settings.schedule.steps), self.shutdown)
        self.heartbeat.beat()
        if self.metrics is not None:
            self.metrics.observe_tick(report)
            try:
                self.metrics.refresh(self.app.database(), self.app.settings.gate)
            except Exception as exc:  # noqa: BLE001 - any database error: logged, then the health check
                log.error("metrics_refresh_failed", error=one_line(exc))
        self._check_database()
        if self.health.healthy:
            result = "ok" if report.ok else "interrupted" if report.interrupted else "FAILED"
            self.notifier.status(f"last tick {result} ({report.seconds:.0f}s); {self._waiting()}")
        return report

    def _check_database(self) -> None:
        """Ask the database; unhealthy (back off) when it does not answer, and when it answers again
        after an outage: the daemon lock kept or taken again, and the outage recorded."""
        reason = database_answers(self.app.database(require_current=False))   # opened at start: no schema check
        if not reason and not self.health.healthy and self.lock is not None:
            try:
                self.lock.keep()
            except LockedError:
                raise   # another daemon took this database meanwhile: this one stops (exit non-zero)
            except Exception as exc:  # noqa: BLE001 - the database went again
                reason = one_line(exc)
        if reason:
            self.health.unhealthy(reason)
            self._next_try = time.monotonic() + self.health.wait_s
            return
        outage = self.health.recovered()
        if outage is not None:
            self._event("database_outage", **outage.details())
            self.notifier.status(f"healthy again after {outage.seconds:.0f} s; {self._waiting()}")

    def _tell_health(self, healthy: bool, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.set_health(healthy, reason)
        if not healthy:
            self.notifier.status(self.health.describe())

    def _waiting(self) -> str:
        nxt = self.scheduler.next_fire() if self.scheduler else None
        return f"next tick {nxt:%Y-%m-%d %H:%M:%S %Z}" if nxt else "no tick scheduled"

    def reload(self) -> None:
        """SIGHUP: the new config, or the old one kept when the new one is bad."""
        self.shutdown.reload_requested = False
        old = self.settings
        try:
            new = self.load_settings()
            trigger_for(new.schedule)
        except ConfigError as exc:
            log.error("reload_rejected", error=exc.one_line(), kept=old.hash())
            self.notifier.status("config reload failed (see the log); old config kept")
            return
        frozen = {k: getattr(old, k) for k in RELOAD_NEEDS_RESTART if getattr(new, k) != getattr(old, k)}
        if frozen:
            log.warning("reload_needs_restart", sections=sorted(frozen), note="kept the running values")
            new = new.model_copy(update=frozen)
        new.source_file = new.source_file or old.source_file
        self.steps.use_settings(old, new)
        self.app.settings = new
        configure_logging(new.logging.level, new.logging.format, run_id=self.app.run_id)
        assert self.scheduler is not None
        self.scheduler.reschedule(new.schedule)
        self._event("daemon_reload", old_config_hash=old.hash())
        log.info("config_reloaded", config_hash=new.hash(), schedule=describe(new.schedule))
        self.notifier.status(f"config reloaded; {self._waiting()}")

    def _event(self, kind: str, **details: Any) -> None:
        try:
            with self.app.database().session() as s:
                record_event(s, kind, run_id=self.app.run_id, config_hash=self.settings.hash(), **details)
        except Exception as exc:  # noqa: BLE001 - the database is gone: the log still says what happened
            log.error("event_not_recorded", kind=kind, error=one_line(exc))
