"""The tick scheduler (issue 25): a tick that outlasts its interval does not make APScheduler warn
"maximum number of running instances" every interval (nor after a stop was asked); the skipped
fire times are counted, for one line per tick."""

from __future__ import annotations

import logging
import time

import pytest

from kbsync.config import ScheduleSettings
from kbsync.daemon.scheduler import TickScheduler


def test_a_long_tick_skips_fire_times_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    scheduler = TickScheduler(ScheduleSettings(interval_s=1))
    scheduler.start()
    try:
        ticket = scheduler.next_ticket(timeout=5)
        assert ticket is not None
        time.sleep(3.5)              # the tick runs on past three fire times
        ticket.set()
        skipped = scheduler.take_skipped()
        assert skipped >= 2 and scheduler.take_skipped() == 0
        scheduler.shutdown()         # a stop was asked: nothing more is counted or logged
        time.sleep(1.2)
        assert scheduler.take_skipped() == 0
    finally:
        scheduler.shutdown()
    warned = [r.getMessage() for r in caplog.records if "maximum number of running instances" in r.getMessage()]
    assert warned == []
