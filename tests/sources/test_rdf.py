from __future__ import annotations

import gzip
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rdflib

from kbsync.errors import CatalogueError, ConfigError, SourceError
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.subjects import SubjectSelection

from .conftest import KNOWN1000, RANKS

ENGINES = ["rdflib", "oxigraph"]
RELATIONS = ["P36", "P37", "P463"]


def by_key(facts):
    return {(f.subject, f.relation): f for f in facts}


def read(paths, engine="oxigraph", relations=RELATIONS, **options):
    selection = options.pop("selection", SubjectSelection())
    source = RdfFileSource(
        paths, engine=engine, options=ReadOptions(selection=selection, **options)
    )
    return source.read_all(relations)


@pytest.mark.parametrize("engine", ENGINES)
def test_truthy_values_labels_and_aliases(engine):
    facts = by_key(read([RANKS], engine, mode="truthy"))
    assert sorted(facts) == [
        ("Q142", "P36"),
        ("Q142", "P37"),
        ("Q183", "P36"),
        ("Q30", "P36"),
        ("Q30", "P463"),
    ]  # Q39 has no wdt: triple; Q1000 has no English label
    france = facts["Q142", "P36"]
    assert france.objects == ("Q90",)  # truthy = the preferred value only
    assert france.subject_label == "France"
    assert france.subject_aliases == ("French Republic",)
    assert france.object_labels == {"Q90": "Paris"}
    assert france.object_aliases == {"Q90": ("City of Light",)}
    assert france.revision == "2024-03-01T10:00:00Z"
    usa = facts["Q30", "P463"]
    assert usa.objects == ("Q1065", "Q7184")
    assert usa.subject_aliases == ("US", "USA", "United States of America")
    assert usa.object_labels == {"Q1065": "United Nations", "Q7184": "NATO"}
    assert usa.object_aliases == {
        "Q1065": ("UN",),
        "Q7184": ("North Atlantic Treaty Organization",),
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_statements_mode_resolves_ranks_without_wdt(engine):
    facts = by_key(read([RANKS], engine, mode="statements"))
    assert facts["Q142", "P36"].objects == ("Q90",)  # preferred beats normal (Versailles)
    assert facts["Q183", "P36"].objects == ("Q64",)  # deprecated Bonn dropped
    assert facts["Q39", "P36"].objects == ("Q70",)  # statements only, no wdt: triple
    assert facts["Q30", "P463"].objects == ("Q1065", "Q7184")  # no rank triple counts as normal
    assert ("Q11", "P36") not in facts  # only a deprecated statement


@pytest.mark.parametrize("engine", ENGINES)
def test_labels_follow_the_language(engine):
    fr = by_key(read([RANKS], engine, language="fr"))
    assert fr["Q30", "P463"].subject_label == "États-Unis"
    assert fr["Q30", "P463"].subject_aliases == ("É.-U.",)
    assert fr["Q142", "P36"].subject_aliases == ("République française",)
    assert fr["Q142", "P37"].object_labels == {"Q150": "français"}
    assert fr["Q30", "P463"].object_labels == {
        "Q1065": "Organisation des Nations unies"
    }  # NATO has no fr label
    assert fr["Q30", "P463"].objects == ("Q1065", "Q7184")
    assert ("Q30", "P36") not in fr  # Washington, D.C. has no French label: nothing to ask
    de = by_key(read([RANKS], engine, language="de"))
    assert de["Q1000", "P36"].subject_label == "Nurdeutschland"
    assert ("Q30", "P36") not in de  # no German label for the United States


def test_both_engines_agree_on_known1000():
    subjects = SubjectSelection.of_ids([f"Q{900000001 + i}" for i in range(0, 1400, 10)])
    relations = [
        f"P{n}"
        for n in (17, 19, 20, 27, 30, 36, 37, 101, 103, 106, 108, 127, 131, 136, 159, 176, 178)
    ]
    slow = read([KNOWN1000], "rdflib", relations, mode="statements", selection=subjects)
    fast = read([KNOWN1000], "oxigraph", relations, mode="statements", selection=subjects)
    assert len(fast) > 50
    assert slow == fast


def test_whole_known1000_reads(tmp_path):
    facts = read([KNOWN1000], "oxigraph", [f"P{n}" for n in (36, 37, 103, 30)])
    capitals = [f for f in facts if f.relation == "P36"]
    assert len(capitals) == 49  # known_1000 has 49 P36 records
    assert all(f.revision and f.subject_label and f.object_labels for f in facts)
    uk = [f for f in facts if f.subject_label == "United Kingdom"]
    assert uk and uk[0].subject_aliases == ("Britain", "Great Britain", "UK")


@pytest.mark.filterwarnings(
    "ignore:ConjunctiveGraph is deprecated:DeprecationWarning"
)  # rdflib's JSON-LD parser
@pytest.mark.parametrize(
    ("fmt", "suffix"), [("nt", ".nt"), ("xml", ".rdf"), ("json-ld", ".jsonld")]
)
def test_formats_and_gzip_give_the_same_facts(tmp_path, fmt, suffix):
    graph = rdflib.Graph().parse(RANKS)
    plain = tmp_path / f"ranks{suffix}"
    graph.serialize(plain, format=fmt, encoding="utf-8")
    packed = tmp_path / f"ranks{suffix}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = read([RANKS], mode="statements")
    for engine in ENGINES:
        assert read([plain], engine, mode="statements") == expected
        assert read([packed], engine, mode="statements") == expected


def test_since_selects_recently_modified_subjects_with_overlap():
    since = datetime(2024, 3, 3, 10, 5, tzinfo=UTC)  # - 10 min overlap: Q30 (10:00) is still in
    source = RdfFileSource([RANKS], options=ReadOptions(mode="statements"))
    assert {f.subject for f in source.read_all(["P36"], since=since)} == {"Q30", "Q39"}
    assert source.read_all(["P36"], since=datetime(2024, 3, 6, 10, 11, tzinfo=UTC)) == []


def test_subject_selection():
    assert {f.subject for f in read([RANKS], selection=SubjectSelection.from_config(["P463"]))} == {
        "Q30"
    }
    fragment = SubjectSelection.from_config(["?item wdt:P37 ?language ."])
    assert {(f.subject, f.relation) for f in read([RANKS], selection=fragment)} == {
        ("Q142", "P36"),
        ("Q142", "P37"),
    }
    ids = SubjectSelection.from_config(["Q183", "wd:Q30", "http://www.wikidata.org/entity/Q999"])
    assert [f.subject for f in read([RANKS], relations=["P36"], selection=ids)] == ["Q183", "Q30"]
    source = RdfFileSource([RANKS], engine="rdflib")
    since = datetime(2024, 3, 2, 10, 0, 1, tzinfo=UTC)
    assert [
        f.subject for f in source.read(["P36"], subjects=["Q142", "Q183", "Q30"], since=since)
    ] == ["Q183", "Q30"]
    with pytest.raises(ConfigError, match="'France' is not an entity id like Q142"):
        SubjectSelection.from_config(["France", "Q142"])


def test_file_changes_are_picked_up(tmp_path):
    path = tmp_path / "kb.ttl"
    shutil.copy(RANKS, path)
    source = RdfFileSource([path], options=ReadOptions(mode="truthy"))
    assert source.read_all(["P36"], subjects=["Q39"]) == []
    with path.open("a", encoding="utf-8") as f:
        f.write("\nwd:Q39 wdt:P36 wd:Q70 .\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    assert [f.objects for f in source.read_all(["P36"], subjects=["Q39"])] == [("Q70",)]


@pytest.mark.parametrize("engine", ENGINES)
def test_unparsable_file_names_file_and_line(tmp_path, engine):
    bad = tmp_path / "bad.ttl"
    bad.write_text(
        RANKS.read_text(encoding="utf-8").replace('"Germany"@en', '"Germany@en', 1),
        encoding="utf-8",
    )
    line = next(
        i
        for i, t in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1)
        if '"Germany@en' in t
    )
    source = RdfFileSource([bad], engine=engine)
    facts = source.read(["P36"])
    with pytest.raises(SourceError) as info:
        next(facts)  # fails before the first fact: a read is all or nothing
    message = info.value.one_line()
    assert f"cannot parse RDF file {bad}" in message and f"line {line}" in message
    assert "\n" not in message


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(
        SourceError,
        match=r"RDF file .*nope\.ttl cannot be read \(No such file or directory\); fix \[kb\] files",
    ):
        RdfFileSource([tmp_path / "nope.ttl"]).read_all(["P36"])
    odd = tmp_path / "kb.csv"
    odd.write_text("a,b\n")
    with pytest.raises(SourceError, match=r"unknown RDF file extension \.csv; use one of \.ttl"):
        RdfFileSource([odd]).read_all(["P36"])
    with pytest.raises(SourceError, match="no shipped knowledge base 'builtin:nothing'"):
        RdfFileSource(["builtin:nothing"])


def test_unknown_relation_is_a_catalogue_error():
    source = RdfFileSource([RANKS])
    with pytest.raises(CatalogueError, match="unknown relation 'P9999'"):
        source.read_all(["P9999"])
    with pytest.raises(CatalogueError, match="'capital' is not a Wikidata property id"):
        source.read_all(["capital"])


def test_on_disk_store_reads_the_same_facts_and_removes_its_scratch(tmp_path):
    """Above DISK_ABOVE_BYTES the graph goes to an on-disk store, loaded in chunks: same facts."""
    import kbsync.sources.rdf as rdf
    from kbsync.sources.catalogue import load_catalogue

    relations = load_catalogue().ids()
    in_memory = by_key(RdfFileSource([KNOWN1000, RANKS], engine="oxigraph").read_all(relations))
    scratch = tmp_path / "scratch"
    source = RdfFileSource([KNOWN1000, RANKS], engine="oxigraph", scratch_dir=scratch, disk_above_bytes=0)
    old_chunk, rdf.LOAD_CHUNK = rdf.LOAD_CHUNK, 1000  # several bulk loads into one store
    try:
        on_disk = by_key(source.read_all(relations))
    finally:
        rdf.LOAD_CHUNK = old_chunk
    assert len(on_disk) > 1000 and on_disk == in_memory
    assert [p.name[:11] for p in scratch.iterdir()] == ["kbsync-rdf-"]
    del source
    import gc

    gc.collect()
    assert list(scratch.iterdir()) == []


def test_scratch_left_by_a_killed_process_is_removed(tmp_path):
    from kbsync.durable import scratch_directory

    dead = tmp_path / "kbsync-rdf-999999999-abc"  # no such pid
    dead.mkdir()
    (dead / "store").write_text("x")
    alive = tmp_path / f"kbsync-rdf-{os.getppid()}-def"  # a running process's
    alive.mkdir()
    with scratch_directory(tmp_path, "kbsync-rdf-") as mine:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, Path(mine).name])
