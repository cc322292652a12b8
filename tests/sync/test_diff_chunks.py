"""diff in chunks (issue 12): a read compared, probed and saved 3 facts at a time gives the same
snapshot, probes, queue and report as one chunk holding everything; --snapshot-only records a
baseline without probing, after which only what changed is probed. Real parts: leaders.ttl read
by Oxigraph, the tiny Llama, SQLite files and (one test) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sources.conftest import LEADERS  # tests/ is on sys.path
from sqlalchemy import select

from kbsync.model.loading import LoadedModel, load_model
from kbsync.sources.catalogue import load_catalogue
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow, KbFact, Probe
from kbsync.sync.diff import DiffOptions, DiffReport, run_diff

RELATIONS = ["P6", "P35", "P54", "P169", "P286", "P488", "P1037", "P1308"]
# three reads: holders as of 2015, as of 2023 (several changed), 2023 again (all unchanged: the sample)
READS = [datetime(2015, 6, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(tiny_model_dir), state_dir=tmp_path_factory.mktemp("state"), device="cpu")


def run(url: str, tiny: LoadedModel, as_of: datetime, chunk: int, work: Path, sample: int = 4,  # type: ignore[no-untyped-def]
        **kw) -> DiffReport:
    db = store_db.open_database(url)
    try:
        source = RdfFileSource([LEADERS], engine="oxigraph", options=ReadOptions(as_of=as_of))
        return run_diff(db, source, load_catalogue(), lambda: tiny,
                        DiffOptions(relations=RELATIONS, max_new_tokens=3, batch_size=2, sample_unchanged=sample,
                                    clock=as_of, chunk_size=chunk, work_dir=work, **kw))
    finally:
        db.dispose()


def state(url: str) -> dict[str, list[tuple]]:
    """Everything a diff writes, without ids and wall-clock times."""
    db = store_db.open_database(url)
    with db.session() as s:
        facts = [(f.subject, f.relation, f.subject_label, f.objects, f.labels, f.content_hash, f.revision, f.why,
                  f.last_probed is None, f.settling_hash)
                 for f in s.scalars(select(KbFact).order_by(KbFact.relation, KbFact.subject))]
        queue = [(r.subject, r.relation, r.target_new, r.target_old, r.target_old_source, r.state, r.content_hash)
                 for r in s.scalars(select(EditRequestRow).order_by(EditRequestRow.id))]
        probes = [(p.run_id, p.subject, p.relation, p.prompt, p.answer, p.agrees)
                  for p in s.scalars(select(Probe).order_by(Probe.id))]
    db.dispose()
    return {"kb_facts": facts, "queue": queue, "probes": probes}


def summary(report: DiffReport) -> tuple:
    rows = [(r.subject, r.relation, r.kb_answer, r.model_answer, r.status, r.action) for r in report.rows]
    return (report.read, report.new, report.changed, report.unchanged, report.probed, report.agree, report.queued,
            report.superseded, rows)


def three_reads(url: str, tiny: LoadedModel, chunk: int, work: Path) -> list[tuple]:
    store_db.upgrade(url)
    return [summary(run(url, tiny, as_of, chunk, work, run_id=f"r{i}")) for i, as_of in enumerate(READS)]


def test_chunks_of_three_give_the_same_snapshot_probes_and_queue_as_one_chunk(tiny, tmp_path: Path) -> None:
    small, large = f"sqlite:///{tmp_path / 'small.db'}", f"sqlite:///{tmp_path / 'large.db'}"
    reports = three_reads(small, tiny, 3, tmp_path / "work")
    assert reports == three_reads(large, tiny, 10_000, tmp_path / "work")
    first, second, third = reports
    assert first[0] > 2 * 3 and first[1] == first[0]                   # several chunks, all new
    assert second[2] > 0 and second[4] == second[2] + 4                 # the changes + a sample of 4
    assert third[2] == 0 and third[4] == 4                              # only the rotating sample
    assert state(small) == state(large)
    assert state(small)["queue"]                                        # something was queued
    assert list((tmp_path / "work").iterdir()) == []                    # the spilled reads are gone


def test_chunked_on_postgresql_matches_sqlite(tiny, tmp_path: Path, postgres_url: str) -> None:
    sqlite = f"sqlite:///{tmp_path / 'one.db'}"
    assert three_reads(postgres_url, tiny, 3, tmp_path / "work") == three_reads(sqlite, tiny, 10_000, tmp_path)
    assert state(postgres_url) == state(sqlite)


def test_snapshot_only_records_a_baseline_then_only_changes_are_probed(tiny, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store_db.upgrade(url)
    baseline = run(url, tiny, READS[0], 3, tmp_path, snapshot_only=True, run_id="adopt")
    assert (baseline.read, baseline.new, baseline.probed, baseline.queued) == (baseline.new, baseline.read, 0, 0)
    recorded = state(url)
    assert len(recorded["kb_facts"]) == baseline.read and not recorded["probes"] and not recorded["queue"]
    assert all(never_probed for *_, never_probed, _ in recorded["kb_facts"])

    later = run(url, tiny, READS[1], 3, tmp_path, sample=1, run_id="later")
    assert later.changed > 0 and later.unchanged > 1 and later.probed == later.new + later.changed + 1
    assert later.probed < later.read  # the unchanged facts beyond the sample were not probed
    assert sum(r.status == "changed" for r in later.rows) == later.changed
    assert {(p[1], p[2]) for p in state(url)["probes"]} == {(r.subject, r.relation) for r in later.rows}


def test_snapshot_only_refuses_dry_run_and_full(tiny, tmp_path: Path) -> None:
    from kbsync.errors import ConfigError

    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store_db.upgrade(url)
    for flag in ("dry_run", "full"):
        with pytest.raises(ConfigError, match="--snapshot-only"):
            run(url, tiny, READS[0], 3, tmp_path, snapshot_only=True, **{flag: True})
    assert state(url) == {"kb_facts": [], "queue": [], "probes": []}


def test_cli_snapshot_only_loads_no_model(run_cli, tmp_path: Path) -> None:
    """--snapshot-only records the KB without a model: a model path that does not exist is never read."""
    import json as _json

    env = {"KBSYNC_STATE__DIR": str(tmp_path / "state"), "KBSYNC_MODEL__PATH": str(tmp_path / "no-model"),
           "KBSYNC_KB__FILES": _json.dumps([str(LEADERS)]), "KBSYNC_RELATIONS__ENABLED": _json.dumps(RELATIONS)}
    assert run_cli("db", "upgrade", env=env).exit_code == 0
    bad = run_cli("diff", "--snapshot-only", "--dry-run", env=env)
    assert bad.exit_code == 2 and "--snapshot-only probes nothing" in bad.err
    r = run_cli("diff", "--snapshot-only", "--as-of", "2023-06-01", env=env)
    assert r.exit_code == 0, r.err
    assert r.out.startswith("recorded 10 facts as the snapshot (10 new, 0 changed, 0 unchanged); probed nothing")
    status = _json.loads(run_cli("status", "--json", env=env).out)
    assert status["kb_facts"] == 10 and status["queue"]["pending"] == 0
    assert list((tmp_path / "state" / "scratch").iterdir()) == []
