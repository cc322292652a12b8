"""Snapshot comparison: which read facts are new, changed or unchanged against kb_facts."""

from __future__ import annotations

from kbsync.sources.fact import Fact
from kbsync.store import db as store_db
from kbsync.store.snapshot import compare, save


def fact(subject: str, obj: str, revision: str = "r1") -> Fact:
    return Fact(subject=subject, relation="P36", objects=(obj,), subject_label=subject, revision=revision)


def test_new_changed_unchanged(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        first = compare(s, [fact("Q142", "Q90"), fact("Q183", "Q64")])
        assert [f.subject for f in first.new] == ["Q142", "Q183"] and not first.changed and not first.unchanged
        save(s, [fact("Q142", "Q90"), fact("Q183", "Q64")], probed={("Q142", "P36")})
    with migrated.session() as s:
        # a new revision with the same content is unchanged; a new object is a change; Q38 is new
        again = compare(s, [fact("Q142", "Q90", revision="r2"), fact("Q183", "Q1055"), fact("Q38", "Q220")])
        assert [f.subject for f in again.unchanged] == ["Q142"]
        assert [f.subject for f in again.changed] == ["Q183"]
        assert [f.subject for f in again.new] == ["Q38"]
        assert [f.subject for f in again.to_probe] == ["Q38", "Q183"]
        assert again.last_probed[("Q142", "P36")] is not None and again.last_probed[("Q183", "P36")] is None
