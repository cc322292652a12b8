from __future__ import annotations

from dataclasses import replace

from kbsync.sources.fact import Fact, KnowledgeSource, read_all
from kbsync.sources.rdf import RdfFileSource

from .conftest import RANKS

FACT = Fact(
    subject="Q142",
    relation="P36",
    objects=("Q90",),
    subject_label="France",
    subject_aliases=("French Republic",),
    object_labels={"Q90": "Paris"},
    object_aliases={"Q90": ("City of Light",)},
    revision="2024-03-01T10:00:00Z",
)


def test_content_hash_ignores_revision_and_alias_order():
    same = replace(FACT, revision="2025-01-01T00:00:00Z", subject_aliases=("French Republic",))
    assert same.content_hash() == FACT.content_hash()
    two = replace(FACT, subject_aliases=("b", "a"))
    assert two.content_hash() == replace(FACT, subject_aliases=("a", "b")).content_hash()
    assert len(FACT.content_hash()) == 64


def test_content_hash_changes_with_the_kb_state():
    hashes = {
        FACT.content_hash(),
        replace(FACT, objects=("Q621",)).content_hash(),
        replace(FACT, object_labels={"Q90": "Paris, France"}).content_hash(),
        replace(FACT, subject_label="République française").content_hash(),
        replace(FACT, object_aliases={}).content_hash(),
        replace(FACT, relation="P1376").content_hash(),
    }
    assert len(hashes) == 6


def test_sources_satisfy_the_protocol():
    source = RdfFileSource([RANKS], engine="oxigraph")
    assert isinstance(source, KnowledgeSource)
    facts = read_all(source, ["P36"], subjects=["Q142"])
    # statements mode (the default) also reports the ended capital (Versailles) and why
    assert facts == [
        replace(
            FACT,
            object_labels={"Q621": "Versailles", "Q90": "Paris"},
            target="Q90",
            stale=("Q621",),
            why={
                "Q621": {"status": "ended", "rank": "normal", "start": "1682-05-06T00:00:00Z",
                         "end": "1789-10-06T00:00:00Z"},
                "Q90": {"status": "current", "rank": "preferred", "start": None, "end": None},
            },
        )
    ]
