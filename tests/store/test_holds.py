"""Fact holds (issue 25): a rolled-back fact stays rolled back, a failed one waits for a change with
back-off, a poison one for an operator; each lapses or is released with the reason recorded."""

from __future__ import annotations

from datetime import timedelta

from kbsync.store import holds
from kbsync.store.models import FactHold, ModelVersion, utcnow

KEY = "model-a"


def versions(s, n: int = 9) -> None:  # type: ignore[no-untyped-def]
    """Model versions 1..n for holds to name (the foreign key)."""
    for i in range(1, n + 1):
        s.add(ModelVersion(id=i, model_key=KEY, batch_ids=[], weights_sha256=f"{i:064d}", is_current=False, reason="t"))
    s.flush()


def now(version: int | None = None, config: str = "cfg1", hours: float = 0.0) -> holds.Now:
    return holds.Now(KEY, version, config, utcnow() + timedelta(hours=hours))


def test_a_rolled_back_fact_waits_for_an_operator_or_a_new_kb_value(migrated) -> None:
    with migrated.session() as s:
        versions(s)
        holds.hold(s, subject="Q1", relation="P36", content_hash="h1", kind="rolled_back", reason="rolled back",
                   now=now())
        later = now(version=7, config="cfg2", hours=1000)             # new version, new settings: still held
        assert holds.waiting(s, "Q1", "P36", "h1", later) is not None
        assert "kbsync release" in holds.why_waiting(holds.active(s, "Q1", "P36"), later)
        assert holds.waiting(s, "Q1", "P36", "h2", later) is None        # the KB value changed: it lapses
        (row,) = s.query(FactHold).all()
        assert (row.state, row.resolved_reason) == ("lapsed", "the KB value changed")


def test_a_failed_fact_waits_for_a_change_and_its_back_off_doubles(migrated) -> None:
    with migrated.session() as s:
        versions(s)
        first = holds.hold(s, subject="Q1", relation="P36", content_hash="h1", kind="failed", reason="no",
                           now=now(version=1), backoff_s=3600)
        assert first.failures == 1
        assert holds.waiting(s, "Q1", "P36", "h1", now(version=1, hours=5)) is not None   # nothing changed
        assert holds.waiting(s, "Q1", "P36", "h1", now(version=2, hours=0.5)) is not None  # changed, in back-off
        assert holds.waiting(s, "Q1", "P36", "h1", now(version=2, hours=1.5)) is None      # changed, back-off over
        assert first.state == "lapsed" and first.resolved_reason.startswith("the model version changed")
        second = holds.hold(s, subject="Q1", relation="P36", content_hash="h1", kind="failed", reason="no again",
                            now=now(version=2), backoff_s=3600)
        assert second.failures == 2                                    # the same KB content failed twice in a row
        assert second.not_before is not None
        assert holds.waiting(s, "Q1", "P36", "h1", now(version=3, hours=1.5)) is not None  # 2 h now
        assert holds.waiting(s, "Q1", "P36", "h1", now(version=3, hours=2.5)) is None
        assert holds.waiting(s, "Q2", "P36", "h1", now()) is None      # another fact: never held


def test_settings_changes_lift_a_refused_fact_and_an_operator_releases_any(migrated) -> None:
    with migrated.session() as s:
        versions(s)
        holds.hold(s, subject="Q1", relation="P36", content_hash="h1", kind="refused", reason="gate", now=now())
        holds.hold(s, subject="Q2", relation="P36", content_hash="h2", kind="poison", reason="poison", now=now())
        assert holds.active_counts(s) == {"rolled_back": 0, "poison": 1, "failed": 0, "refused": 1}
        assert holds.waiting(s, "Q1", "P36", "h1", now(config="cfg2")) is None          # new settings
        assert holds.waiting(s, "Q2", "P36", "h2", now(version=9, config="x")) is not None  # poison: an operator
        assert holds.release(s, [holds.active(s, "Q2", "P36")], "alice") == 1
        assert holds.waiting(s, "Q2", "P36", "h2", now()) is None
        released = s.query(FactHold).filter(FactHold.subject == "Q2").one()
        assert (released.state, released.resolved_by) == ("released", "alice")
