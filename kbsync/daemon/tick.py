"""One tick: diff (read the KB, probe the model, queue disagreements) or follow (Wikidata's change
stream until caught up, then the same for what changed), then apply (verified
MEMIT batches), recorded as one `tick` event. With their policies on, apply is preceded by
undoing the batches that damage was flagged against ([verify] on_damage = "rollback") and
followed by compacting a long delta log ([editing] compact_after): steps of their own.

    for each configured step, in order:
        stop asked for?  -> skip the rest (the first signal lets the current unit finish)
        run the step     -> counts, or the error as one line (the next step still runs)
    record_event("tick", ok, counts, steps)

The steps are the library's own entry points (`kbsync.sync.from_settings`: `diff_from_settings`, the
`kbsync diff` command's library function, and `sync.apply.apply_pending` over a
`model_writer`, as `kbsync apply` runs it), imported lazily so that the
daemon takes its lock and reports READY without loading the model code. The loaded
model is kept between ticks (a daemon that ticks every few minutes should not reload it), and
is materialised at the current model version before the diff probes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from kbsync.daemon.health import one_line
from kbsync.errors import KbsyncError, ServingError, VerificationError
from kbsync.logs import get_logger, new_run_id
from kbsync.runtime import App, Interrupted, Stop, worker_name
from kbsync.store.events import record_event

if TYPE_CHECKING:
    from kbsync.config import Settings
    from kbsync.versions.context import EditingContext

log = get_logger(__name__)

STEP_NAMES = ("diff", "follow", "apply", "verify")
COUNT_KEYS = ("read", "probed", "agree", "queued", "superseded", "applied", "failed", "batches", "recovered",
              "poisoned", "rolled_back", "compacted", "checked")


class Control(Protocol):
    """What a step asks of the work loop (`kbsync.daemon.loop.Shutdown` provides it)."""

    stop: Stop  # the two-stage stop: steps pass its checks down to long computations

    def beat(self) -> None: ...


Step = Callable[[str, Control], tuple[bool, dict[str, int]]]  # (run id, control) -> (ok, counts)


@dataclass
class StepResult:
    name: str
    ok: bool
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""
    exit_code: int = 0
    seconds: float = 0.0


@dataclass
class TickReport:
    run_id: str
    started_at: datetime
    seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(s.ok for s in self.steps)

    @property
    def exit_code(self) -> int:
        """0, or the code of the first failing step (KbsyncError branch; 7 for failed batches)."""
        return next((s.exit_code or 1 for s in self.steps if not s.ok), 1 if self.interrupted else 0)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(COUNT_KEYS, 0)
        for s in self.steps:
            for key, value in s.counts.items():
                out[key] = out.get(key, 0) + value
        return out

    def details(self) -> dict[str, Any]:
        return {**self.counts, "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
                "skipped": self.skipped,
                "steps": {s.name: {"ok": s.ok, "error": s.error, "seconds": round(s.seconds, 3)} for s in self.steps}}


class Steps:
    """The diff and apply steps of one daemon, and what they keep between ticks."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._ctx: EditingContext | None = None

    def use_settings(self, old: Settings, new: Settings) -> None:
        """After a config reload: forget the loaded model if what it depends on changed."""
        if (new.model, new.editing) != (old.model, old.editing):
            self._ctx = None        # the next tick loads the model and hyper-parameters again
        elif self._ctx is not None:
            self._ctx.settings = new

    def editing(self) -> EditingContext:
        from kbsync.versions.context import editing_context

        if self._ctx is None:
            self._ctx = editing_context(self.app.settings, self.app.state_dir)
        return self._ctx

    def named(self, names: Sequence[str]) -> list[tuple[str, Step]]:
        """The configured steps; "apply" brings its two policy steps when they are on: "undo_damage"
        before it ([verify] on_damage = "rollback"), "compact" after it ([editing] compact_after) and
        "serve" last ([serve] reload: the engine loads the new current version)."""
        table: dict[str, Step] = {"diff": self.diff, "follow": self.follow, "undo_damage": self.undo_damage,
                                  "apply": self.apply, "compact": self.compact, "verify": self.verify,
                                  "serve": self.serve}
        settings = self.app.settings
        expanded: list[str] = []
        for n in names:
            if n == "apply" and settings.verify.on_damage == "rollback":
                expanded.append("undo_damage")
            expanded.append(n)
            if n == "apply" and settings.editing.compact_after:
                expanded.append("compact")
            if n == "apply" and settings.serve.reload != "none":
                expanded.append("serve")
        return [(n, table[n]) for n in expanded]

    def writer(self, run_id: str, control: Control):  # type: ignore[no-untyped-def]
        from kbsync.sync.from_settings import model_writer

        return model_writer(self.app.settings, self.app.database(), self.app.state_dir, run_id=run_id,
                            worker=worker_name(), stop=control.stop, ctx=self.editing())

    def undo_damage(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        from kbsync.sync.rollback import rollback_damaged

        return True, {"rolled_back": len(rollback_damaged(self.writer(run_id, control)))}

    def compact(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        from kbsync.sync.compact import compact_if_long

        report = compact_if_long(self.writer(run_id, control))
        return True, {"compacted": int(report is not None and report.ok)}

    def serve(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        """The engine reloads when the current version changed, or its last reload failed ([serve])."""
        from kbsync.serving.reload import reload_if_changed
        from kbsync.sync.from_settings import configured_model_key

        app = self.app
        row = reload_if_changed(app.settings, app.database(), app.state_dir,
                                configured_model_key(app.settings, app.state_dir), action="tick", run_id=run_id)
        if row is not None and row.state != "ok":
            raise ServingError(f"reload of the serving engine failed: {row.detail}")
        return True, {"reloaded": int(row is not None)}

    def diff(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        from kbsync.sync.from_settings import diff_from_settings
        from kbsync.versions.registry import load_current

        def load():  # type: ignore[no-untyped-def]  # only when something is to be probed (a read first)
            ctx = self.editing()
            load_current(self.app.database(), ctx.store)  # probe the model as it is now: base ⊕ active deltas
            return ctx.loaded

        def progress(_done: int, _total: int) -> None:
            control.beat()
            control.stop.check_in_batch()  # the diff is one unit: only the second signal stops it

        report = diff_from_settings(self.app.settings, self.app.database(), self.app.state_dir, run_id=run_id,
                                    loaded=load, progress=progress)
        counts = {k: int(getattr(report, k)) for k in ("read", "probed", "agree", "queued", "superseded")}
        return True, counts

    def follow(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        """[kb] source = "wikidata": the change stream until caught up, then probe and queue what changed."""
        from kbsync.sync.from_settings import follow_from_settings
        from kbsync.versions.registry import load_current

        def load():  # type: ignore[no-untyped-def]
            ctx = self.editing()
            load_current(self.app.database(), ctx.store)
            return ctx.loaded

        control.beat()
        report = follow_from_settings(self.app.settings, self.app.database(), self.app.state_dir, run_id=run_id,
                                      loaded=load)
        control.beat()
        return True, {"events": report.events, "fetched": report.fetched, "queued": report.diff["queued"],
                      "probed": report.diff["probed"]}

    def apply(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        from kbsync.sync.apply import apply_pending

        report = apply_pending(self.writer(run_id, control), batch_size=self.app.settings.editing.batch_size,
                               max_edits=self.app.settings.schedule.max_edits_per_tick or None,
                               on_batch=lambda _outcome: control.beat(),
                               progress=lambda _done, _total: control.beat())
        counts = {"applied": report.applied, "failed": report.failed, "batches": len(report.batches),
                  "recovered": report.recovered, "poisoned": report.poisoned}
        return report.ok, counts


    def verify(self, run_id: str, control: Control) -> tuple[bool, dict[str, int]]:
        """`kbsync verify --all` as a step: every applied edit of the current version re-checked;
        one that no longer holds (drift) fails, and so does the step."""
        from kbsync.sync.drift import verify

        report = verify(self.writer(run_id, control))
        return not report.failed, {"checked": report.checked, "failed": len(report.failed)}


def run_tick(app: App, steps: list[tuple[str, Step]], control: Control) -> TickReport:
    """Run `steps` in order under a fresh run id and record the `tick` event."""
    run_id = new_run_id()
    report = TickReport(run_id=run_id, started_at=datetime.now(UTC))
    t0 = time.perf_counter()
    log.info("tick_started", tick_run_id=run_id, steps=[n for n, _ in steps])
    try:
        for name, step in steps:
            if control.stop.requested:
                report.skipped.append(name)
                continue
            control.beat()
            report.steps.append(_run_step(name, step, run_id, control))
    except Interrupted:
        report.interrupted = True
        report.skipped += [n for n, _ in steps if n not in {s.name for s in report.steps}]
    finally:
        report.seconds = time.perf_counter() - t0
        _record(app, report)
    log.info("tick_done", tick_run_id=run_id, ok=report.ok, seconds=round(report.seconds, 2), **report.counts)
    return report


def _run_step(name: str, step: Step, run_id: str, control: Control) -> StepResult:
    t0 = time.perf_counter()
    try:
        ok, counts = step(run_id, control)
    except Interrupted:
        log.warning("step_interrupted", step=name)
        raise
    except KbsyncError as exc:
        log.error("step_failed", step=name, error=exc.one_line())
        return StepResult(name, False, error=exc.one_line(), exit_code=exc.exit_code, seconds=time.perf_counter() - t0)
    except Exception as exc:  # a bug or an untranslated library error: record it, keep the daemon alive
        log.exception("step_crashed", step=name)
        return StepResult(name, False, error=f"{type(exc).__name__}: {exc}", exit_code=1,
                          seconds=time.perf_counter() - t0)
    error = "" if ok else f"{counts.get('failed', 0)} edit(s) failed verification"
    return StepResult(name, ok, counts, error, 0 if ok else VerificationError.exit_code, time.perf_counter() - t0)


def _record(app: App, report: TickReport) -> None:
    try:
        with app.database().session() as s:
            record_event(s, "tick", run_id=report.run_id, config_hash=app.settings.hash(), ok=report.ok,
                         **report.details())
    except Exception as exc:  # noqa: BLE001 - the database is gone (translated or not): the log says what happened
        log.error("tick_not_recorded", error=one_line(exc))

