"""Process-level safety of the flows that publish a model version: crashes and concurrent writers.

Crash safety: `kbsync apply`, `kbsync rollback` and `kbsync compact` killed (SIGKILL) at each
crash point of the publish transition they share (versions/transition.py), then run again.
After the rerun: no request lost or stuck, no version without its audit rows, no audit row
naming a missing or mismatched file, no version directory SQL does not name, and the final
weights equal an uninterrupted run's. Runs the real CLI in subprocesses on the tiny model (the
machinery, not the maths, is tested).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow
from kbsync.store.transitions import enqueue
from kbsync.versions.transition import CRASH_POINTS

pytestmark = pytest.mark.process  # starts kbsync processes: the third test tier

FACTS = [("Q142", "France", "Berlin", "Paris"), ("Q183", "Germany", "Rome", "Berlin"),
         ("Q38", "Italy", "Paris", "Rome")]


def write_config(root: Path, model_dir: Path, db_url: str = "") -> Path:
    cfg = root / "kbsync.toml"
    cfg.write_text(f"""
[database]
url = "{db_url}"
[state]
dir = "{root / 'state'}"
[model]
path = "{model_dir}"
device = "cpu"
[editing]
layers = [1, 2]
cov_lambda = 1.0
cov_samples = 32
corpus = "{model_dir / 'corpus.txt'}"
batch_size = 3
retry_smaller = false
[verify]
min_efficacy_acc = 0.0
min_paraphrase_acc = 0.0
min_efficacy = 0.0
min_paraphrase = 0.0
min_specificity = 0.0
neighbours = 0
[gate]
texts = 4
max_perplexity_rise = 1e6
max_perplexity_rise_base = 1e6
max_known_drop = 1.0
max_known_drop_base = 1.0
min_retention = 0.0
max_retention_drop = 1.0
""")
    return cfg


def kbsync_cmd(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kbsync", "--config", str(cfg), "--log-level", "warning", *args]


def apply_cmd(cfg: Path, *extra: str) -> list[str]:
    return kbsync_cmd(cfg, "apply", "--json", *extra)


def kbsync(cfg: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    if crash_at:
        env["KBSYNC_CRASH_AT"] = crash_at
    return subprocess.run(kbsync_cmd(cfg, *args), env=env, capture_output=True, text=True, timeout=600)


def apply(cfg: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return kbsync(cfg, "apply", "--json", crash_at=crash_at)


def queue(cfg: Path, root: Path, url: str = "", facts=FACTS) -> str:
    url = url or f"sqlite:///{root / 'state' / 'kbsync.db'}"
    (root / "state").mkdir(parents=True, exist_ok=True)
    store_db.upgrade(url)
    db = store_db.open_database(url)
    with db.session() as s:
        for qid, label, new, old in facts:
            enqueue(s, EditRequestRow(subject=qid, relation="P36", subject_label=label, prompt="The capital of {} is",
                                      target_new=new, target_new_id=f"X{new}", target_old=old, acceptable=[new],
                                      paraphrases=["{}'s capital city is"], content_hash=qid), "test")
    db.dispose()
    return url


def invariants(url: str) -> str:
    """Check the store is consistent; return the current version's weights hash."""
    engine = create_engine(url)
    with engine.connect() as conn:
        states = [r[0] for r in conn.execute(text("SELECT state FROM edit_requests"))]
        assert sorted(states) == ["verified"] * len(FACTS), states
        assert conn.execute(text("SELECT count(*) FROM batches WHERE state = 'running'")).scalar() == 0
        for path, sha in conn.execute(text("SELECT delta_path, delta_sha256 FROM batches WHERE delta_path IS NOT NULL")):
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
        versions = conn.execute(text("SELECT id, path, weights_sha256, is_current FROM model_versions")).all()
        for _, path, _, _ in versions:
            assert path is None or (Path(path) / "config.json").is_file()
        verified_batches = conn.execute(text("SELECT count(*) FROM batches WHERE state = 'verified'")).scalar()
        assert verified_batches == 1
        current = [v for v in versions if v[3]]
        assert len(current) == 1
        events = conn.execute(text("SELECT count(*) FROM events WHERE kind = 'batch_applied'")).scalar()
        assert events == 1
    engine.dispose()
    state = Path(url.removeprefix("sqlite:///")).parent
    on_disk = {p.name for p in (state / "store").glob("*/versions/*")}
    assert on_disk == {Path(current[0][1]).name}, "a version directory no SQL row names was left behind"
    return current[0][2]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("reference")
    cfg = write_config(root, tiny_model_dir)
    url = queue(cfg, root)
    result = apply(cfg)
    assert result.returncode == 0, result.stderr
    return invariants(url)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_apply_recovers_to_the_uninterrupted_result(point: str, reference: str, tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tiny_model_dir)
    url = queue(cfg, tmp_path)
    crashed = apply(cfg, crash_at=point)
    assert crashed.returncode == -9, (crashed.returncode, crashed.stderr[-2000:])
    again = apply(cfg)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert report["applied"] == (0 if point == "committed" else len(FACTS))  # committed: only the pointer lagged
    assert invariants(url) == reference


# --- rollback and compact: the same transition, the same crash points ------------------------
FLOW_POINTS = {"rollback": ("version_written", "before_commit", "committed"),
               "compact": ("targets", "delta_written", "version_written", "before_commit", "committed")}


def two_batches(root: Path, model_dir: Path) -> tuple[Path, str]:
    """A model with two applied batches (2 + 1 edits)."""
    cfg = write_config(root, model_dir)
    url = queue(cfg, root)
    done = kbsync(cfg, "apply", "--json", "--batch-size", "2")
    assert done.returncode == 0 and json.loads(done.stdout)["applied"] == len(FACTS), done.stderr[-2000:]
    return cfg, url


def flow_args(flow: str) -> tuple[str, ...]:
    return ("rollback", "2") if flow == "rollback" else ("compact",)


def flow_state(url: str) -> tuple[str, int, dict[str, int]]:
    """The current weights, the length of the current log (a re-run compaction has another batch id)
    and the request states, after checking the store's
    invariants: nothing running, every delta file as recorded, no version directory SQL does not name."""
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batches WHERE state = 'running'")).scalar() == 0
        for path, sha in conn.execute(text("SELECT delta_path, delta_sha256 FROM batches WHERE delta_path IS NOT NULL")):
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
        sha, log, path = conn.execute(text(
            "SELECT weights_sha256, batch_ids, path FROM model_versions WHERE is_current")).one()
        named = {Path(p).name for (p,) in conn.execute(text("SELECT path FROM model_versions WHERE path IS NOT NULL"))}
        states: dict[str, int] = {}
        for (state,) in conn.execute(text("SELECT state FROM edit_requests")):
            states[state] = states.get(state, 0) + 1
    engine.dispose()
    store = Path(url.removeprefix("sqlite:///")).parent / "store"
    assert {p.name for p in store.glob("*/versions/*")} <= named, "a version directory no SQL row names"
    current = next(store.glob("*/current"), None)
    assert (current.resolve().name if current is not None else None) == (Path(path).name if path else None)
    return sha, len(json.loads(log) if isinstance(log, str) else log), states


@pytest.fixture(scope="module")
def flow_reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = {}
    for flow in FLOW_POINTS:
        root = tmp_path_factory.mktemp(f"reference-{flow}")
        cfg, url = two_batches(root, tiny_model_dir)
        result = kbsync(cfg, *flow_args(flow))
        assert result.returncode == 0, result.stderr[-2000:]
        out[flow] = flow_state(url)
    return out


@pytest.mark.parametrize(("flow", "point"), [(f, p) for f, points in FLOW_POINTS.items() for p in points])
def test_killed_rollback_or_compact_recovers_to_the_uninterrupted_result(flow: str, point: str, flow_reference,
                                                                         tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg, url = two_batches(tmp_path, tiny_model_dir)
    crashed = kbsync(cfg, *flow_args(flow), crash_at=point)
    assert crashed.returncode == -9, (crashed.returncode, crashed.stderr[-2000:])
    checked = kbsync(cfg, "verify", "--all")            # takes the writer lock: reconciles files and pointer
    assert checked.returncode == 0, checked.stderr[-2000:]
    if point != "committed":                              # the flow's transaction never ran: run it again
        again = kbsync(cfg, *flow_args(flow))
        assert again.returncode == 0, again.stderr[-2000:]
    assert flow_state(url) == flow_reference[flow]



def test_two_apply_processes_on_postgresql_apply_each_request_once(tiny_model_dir: Path, tmp_path: Path,
                                                                    postgres_url: str) -> None:
    facts = FACTS + [("Q55", "Holland", "Tokyo", "Amsterdam"), ("Q30", "Japan", "Madrid", "Tokyo"),
                     ("Q29", "Spain", "Lisbon", "Madrid")]
    cfg = write_config(tmp_path, tiny_model_dir, postgres_url)
    queue(cfg, tmp_path, postgres_url, facts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    procs = [subprocess.Popen(apply_cmd(cfg, "--batch-size", "2", "--wait", "600"), env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    applied = sum(json.loads(out)["applied"] for out, _ in outs)
    assert applied == len(facts)
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        per_request = conn.execute(text(
            "SELECT request_id, count(*) FROM request_transitions WHERE to_state = 'applied' GROUP BY request_id")).all()
        states = {r[0] for r in conn.execute(text("SELECT state FROM edit_requests"))}
    engine.dispose()
    assert len(per_request) == len(facts) and all(n == 1 for _, n in per_request)
    assert states == {"verified"}


def test_second_apply_on_sqlite_exits_with_a_clear_message(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Another writer holds the model lock: `kbsync apply` exits 4 at once, or after --wait."""
    from kbsync.model.loading import model_identity
    from kbsync.store.locks import held_lock
    from kbsync.versions.registry import writer_lock_name

    cfg = write_config(tmp_path, tiny_model_dir)
    url = queue(cfg, tmp_path)
    db = store_db.open_database(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    name = writer_lock_name(model_identity(tiny_model_dir, tmp_path / "state"))
    with held_lock(db, name, tmp_path / "state" / "locks"):
        refused = subprocess.run(apply_cmd(cfg), env=env, capture_output=True, text=True, timeout=300)
        waited = subprocess.run(apply_cmd(cfg, "--wait", "2"), env=env, capture_output=True, text=True, timeout=300)
    for result in (refused, waited):
        assert result.returncode == 4, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith("LockedError: the model's writer lock")
    done = subprocess.run(apply_cmd(cfg), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and json.loads(done.stdout)["applied"] == len(FACTS)
    db.dispose()


def test_one_sigterm_during_key_statistics_stops_kbsync_apply(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Issue 15 #6: key statistics are no batch, so the first SIGTERM stops them (exit 143), and
    the queue is as it was."""
    import signal
    import time

    cfg = write_config(tmp_path, tiny_model_dir)
    cfg.write_text(cfg.read_text().replace("cov_samples = 32", "cov_samples = 10000000")
                   .replace(f'corpus = "{tiny_model_dir / "corpus.txt"}"', 'corpus = "model-samples"'))
    url = queue(cfg, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    proc = subprocess.Popen(apply_cmd(cfg), env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    locks = tmp_path / "state" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)                      # the model is loading or the statistics are being computed
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("Interrupted: stopped by SIGTERM")
    assert '"stop_requested"' in err                    # the signal is logged
    engine = create_engine(url)
    with engine.connect() as conn:
        assert {r[0] for r in conn.execute(text("SELECT state FROM edit_requests"))} == {"pending"}
        event = conn.execute(text("SELECT ok FROM events WHERE kind = 'apply'")).one()
    engine.dispose()
    assert not event[0]


def current_weights(url: str) -> tuple[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        sha = conn.execute(text("SELECT weights_sha256 FROM model_versions WHERE is_current")).scalar_one()
        verified = conn.execute(text("SELECT count(*) FROM edit_requests WHERE state = 'verified'")).scalar_one()
    engine.dispose()
    return sha, verified


def test_restarted_and_killed_multi_batch_run_writes_bit_identical_weights(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    """Issue 15 #12: every random choice of a batch (context prefixes) is seeded from its content and
    drawn from the model as it is, so batches after a restart or a kill -9 hash like an uninterrupted run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    runs = {}
    for name in ("uninterrupted", "interrupted"):
        root = tmp_path / name
        root.mkdir()
        cfg = write_config(root, tiny_model_dir)
        url = queue(cfg, root)
        if name == "interrupted":
            first = subprocess.run(apply_cmd(cfg, "--batch-size", "1", "--max-edits", "1"), env=env,
                                   capture_output=True, text=True, timeout=600)
            assert first.returncode == 0, first.stderr[-2000:]
            killed = subprocess.run(apply_cmd(cfg, "--batch-size", "1"), capture_output=True, text=True, timeout=600,
                                    env=env | {"KBSYNC_CRASH_AT": "delta_written"})
            assert killed.returncode == -9, killed.stderr[-2000:]
        done = subprocess.run(apply_cmd(cfg, "--batch-size", "1"), env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = current_weights(url)
    assert runs["interrupted"] == runs["uninterrupted"]
    assert runs["uninterrupted"][1] == len(FACTS)
