"""The incremental watermark (issue 15 #1): it moves only over what a diff read in full.

The source is a fake that honours `since` the way the SPARQL reader does (facts modified after
it); the database is a real SQLite file and the model the tiny Llama.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kbsync.model.loading import load_model
from kbsync.sources.catalogue import load_catalogue
from kbsync.sources.fact import Fact
from kbsync.store import snapshot
from kbsync.sync.diff import DiffOptions, run_diff

KEY = "last_read:test"
FACTS = [Fact(f"Q{i}", "P36", (f"Q{100 + i}",), f"Country {i}", object_labels={f"Q{100 + i}": "Paris"},
              revision="2024-01-01T00:00:00Z") for i in range(6)]


class ModifiedSince:
    """Every fact modified after `since` (all of them: each was modified before the first read)."""

    def __init__(self) -> None:
        self.since: list[datetime | None] = []

    def read(self, relations: Sequence[str], subjects: Sequence[str] | None = None,
             since: datetime | None = None) -> Iterator[Fact]:
        self.since.append(since)
        cutoff = datetime(2024, 1, 1, tzinfo=UTC)
        for fact in FACTS:
            if fact.relation in relations and (not subjects or fact.subject in subjects):
                if since is None or cutoff > since:
                    yield fact


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_model(str(tiny_model_dir), state_dir=tmp_path_factory.mktemp("state"), device="cpu")


def diff(db, source, tiny, **kw):  # type: ignore[no-untyped-def]
    return run_diff(db, source, load_catalogue(), lambda: tiny,
                    DiffOptions(relations=["P36"], incremental_key=KEY, max_new_tokens=2, **kw))


def watermark(db) -> str | None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return snapshot.get_value(s, KEY)


@pytest.mark.parametrize("limited", [{"limit": 3}, {"subjects": ["Q1"]}, {"scope_limited": True}])
def test_a_limited_diff_leaves_the_watermark_and_the_next_run_reads_the_rest(database, tiny, limited) -> None:
    source = ModifiedSince()
    first = diff(database, source, tiny, **limited)
    assert first.read < len(FACTS) or limited == {"scope_limited": True}
    assert watermark(database) is None
    second = diff(database, source, tiny)
    assert source.since[-1] is None and second.read == len(FACTS)
    assert watermark(database) is not None
    third = diff(database, source, tiny)
    assert third.read == 0  # now everything was read once in full: the watermark may move


def test_a_limit_that_cuts_nothing_is_a_full_read(database, tiny) -> None:
    diff(database, ModifiedSince(), tiny, limit=len(FACTS))
    assert watermark(database) is not None
