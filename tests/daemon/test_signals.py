"""The daemon's signals, in process (the daemon in the main thread, a driver thread sending
signals): a second SIGTERM aborts a batch at its next stop check; SIGHUP reloads the config."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.store.db import open_database
from kbsync.store.models import Batch, EditRequestRow, Event
from kbsync.store.states import BatchState, RequestState

from .conftest import migrate, run_in_process, seed_queue, wait_for, write_config

pytestmark = pytest.mark.process  # starts kbsync processes: the third test tier

def _rows(db, model):  # type: ignore[no-untyped-def]
    with db.session() as s:
        rows = list(s.scalars(select(model).order_by(model.id)))
        s.expunge_all()
    return rows


def test_second_sigterm_gives_the_batch_being_computed_back_to_the_queue(tmp_path: Path, tiny_model_dir: Path) -> None:
    # 6 edits in one batch and many target steps: the batch computes for a while.
    config = migrate(write_config(tmp_path / "kbsync.toml", tiny_model_dir, interval_s=1, steps=("apply",),
                                  batch_size=6, v_steps=20000))
    assert seed_queue(config) == 6

    def driver(daemon) -> None:  # type: ignore[no-untyped-def]
        db = daemon.app.database()
        wait_for(lambda: any(b.state == BatchState.RUNNING.value for b in _rows(db, Batch)), 120,
                 what="a running batch")
        time.sleep(1.0)                                  # inside the target optimisation
        os.kill(os.getpid(), signal.SIGTERM)             # 1st: finish this batch ...
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)             # 2nd: ... no, abort it at the next check

    code, daemon = run_in_process(config, driver)
    assert code == 0   # aborted, not finished: 20,000 target steps would outlast any test (the states below)
    db = open_database(daemon.app.settings.database_url)
    batches, requests = _rows(db, Batch), _rows(db, EditRequestRow)
    ticks = [e for e in _rows(db, Event) if e.kind == "tick"]
    db.dispose()
    assert [b.state for b in batches] == [BatchState.FAILED.value]
    assert batches[0].state_reason == "not applied: Interrupted: SIGTERM"
    assert {r.state for r in requests} == {RequestState.PENDING.value}
    assert ticks[-1].ok is False and ticks[-1].details["interrupted"] is True


def test_the_stop_is_two_stage_and_raises_only_where_it_is_checked() -> None:
    from kbsync.runtime import Interrupted, Stop

    stop, before = Stop(), signal.getsignal(signal.SIGTERM)
    stop.check_in_batch()
    stop.check_outside_batch()                    # nothing asked: no check raises
    with stop.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)      # 1st: finish the batch, claim no other
        assert stop.requested and stop.stage == 1
        stop.check_in_batch()                     # a batch goes on ...
        with pytest.raises(Interrupted, match="SIGTERM"):
            stop.check_outside_batch()            # ... work that is no batch stops
        os.kill(os.getpid(), signal.SIGINT)       # 2nd (either signal): abort the batch
        assert stop.stage == 2
        with pytest.raises(Interrupted, match="SIGINT") as caught:
            stop.check_in_batch()
    assert caught.value.exit_code == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) == before      # the handlers are put back


def test_sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_bad(tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    config = migrate(write_config(tmp_path / "kbsync.toml", tmp_path / "no-model", interval_s=1, steps=()))
    good = config.read_text()

    def driver(daemon) -> None:  # type: ignore[no-untyped-def]
        config.write_text(good.replace("interval_s = 1", "interval_s = 7"))
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: daemon.settings.schedule.interval_s == 7, 10, what="the reload")
        config.write_text(good.replace("interval_s = 1", "interval_s = 'often'"))   # invalid
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(2.5)                          # the loop looks at the flag at least once a second

    code, daemon = run_in_process(config, driver)
    assert code == 0
    assert daemon.settings.schedule.interval_s == 7
    captured = capfd.readouterr()
    assert "reload_rejected" in captured.out + captured.err
    db = open_database(daemon.settings.database_url)
    kinds = [e.kind for e in _rows(db, Event)]
    db.dispose()
    assert kinds.count("daemon_reload") == 1 and kinds[0] == "daemon_start" and kinds[-1] == "daemon_stop"
