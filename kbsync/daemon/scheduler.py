"""When ticks run: APScheduler 3 fires, the work loop's main thread runs the tick.

The scheduler's job does not run the tick itself; it hands a ticket to the main thread and
waits until that tick is done. So the job instance stays "running" for the whole tick, and
APScheduler's own rules mean what they say:
- max_instances=1: a fire time that comes while a tick still runs is skipped. APScheduler
  warns about each one ("maximum number of running instances reached"), every interval of a
  long tick and on after a stop was asked; that warning is dropped here and the skips are
  counted instead (`take_skipped`): the work loop logs one line per tick that outlasted them;
- coalesce=True: a backlog of missed fire times (a suspended host) runs as one tick;
- misfire_grace_time = [schedule] misfire_grace_s: a tick later than that is dropped.
The tick runs in the main thread because that is where Python delivers signals, and the
second stop signal must be able to interrupt it at a safe point.

[schedule] cron is a five-field crontab in [schedule] timezone (UTC by default);
[schedule] interval_s > 0 replaces it with a fixed interval (seconds), for tests and for
intervals under a minute that crontab cannot express.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from kbsync.config import ScheduleSettings
from kbsync.errors import ConfigError

JOB_ID = "kbsync-tick"
SKIPPED_FIRE = "maximum number of running instances"   # APScheduler's warning for each skipped fire time


class _NoSkipWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return SKIPPED_FIRE not in record.getMessage()


def _scheduler_logger() -> logging.Logger:
    """APScheduler's own logger, less its warning for each fire time skipped while a tick runs."""
    logger = logging.getLogger("apscheduler.scheduler.kbsync")
    if not any(isinstance(f, _NoSkipWarnings) for f in logger.filters):
        logger.addFilter(_NoSkipWarnings())
    return logger


def trigger_for(schedule: ScheduleSettings) -> BaseTrigger:
    """The trigger of [schedule], or ConfigError naming the bad key."""
    try:
        tz = ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"[schedule] timezone {schedule.timezone!r} is not an IANA time zone; e.g. UTC or "
                          "Europe/Berlin") from exc
    if schedule.interval_s:
        return IntervalTrigger(seconds=schedule.interval_s, timezone=tz)
    try:
        return CronTrigger.from_crontab(schedule.cron, timezone=tz)
    except ValueError as exc:
        raise ConfigError(f"[schedule] cron {schedule.cron!r} is not a valid crontab expression ({exc}); "
                          "e.g. '0 3 * * *' (daily at 03:00)") from exc


def describe(schedule: ScheduleSettings) -> str:
    if schedule.interval_s:
        return f"every {schedule.interval_s}s"
    return f"cron '{schedule.cron}' {schedule.timezone}"


class TickScheduler:
    def __init__(self, schedule: ScheduleSettings) -> None:
        self.tickets: queue.Queue[threading.Event] = queue.Queue()
        self._closed = threading.Event()
        self._skipped = 0                       # fire times skipped while a tick ran, since take_skipped
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(daemon=True, logger=_scheduler_logger())
        self._scheduler.add_job(self._fire, trigger_for(schedule), id=JOB_ID, name="kbsync tick", max_instances=1,
                                coalesce=True, misfire_grace_time=schedule.misfire_grace_s)
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)

    def _on_skipped(self, event: JobSubmissionEvent) -> None:
        if not self._closed.is_set():
            with self._lock:
                self._skipped += len(event.scheduled_run_times) or 1

    def take_skipped(self) -> int:
        """How many fire times came while a tick ran (and were skipped) since the last call."""
        with self._lock:
            skipped, self._skipped = self._skipped, 0
        return skipped

    def _fire(self) -> None:
        """Runs in APScheduler's thread pool: ask the main thread for a tick, wait until it is done."""
        if self._closed.is_set():
            return
        done = threading.Event()
        self.tickets.put(done)
        while not done.wait(1.0) and not self._closed.is_set():
            pass

    def start(self) -> None:
        self._scheduler.start()

    def reschedule(self, schedule: ScheduleSettings) -> None:
        self._scheduler.modify_job(JOB_ID, misfire_grace_time=schedule.misfire_grace_s)
        self._scheduler.reschedule_job(JOB_ID, trigger=trigger_for(schedule))

    def next_fire(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID)
        return job.next_run_time if job else None

    def next_ticket(self, timeout: float) -> threading.Event | None:
        try:
            return self.tickets.get(timeout=timeout)
        except queue.Empty:
            return None

    def shutdown(self) -> None:
        """Stop firing and release any job still waiting for the main thread."""
        self._closed.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        while True:
            try:
                self.tickets.get_nowait().set()
            except queue.Empty:
                return
