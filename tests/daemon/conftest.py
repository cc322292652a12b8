"""Fixtures for the daemon tests: a tiny random Llama with the SmolLM2 tokenizer as a local HF
directory, a small slice of tests/data/known1000.ttl, a corpus file, and a way to start
`python -m kbsync` as a real subprocess in a state directory of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KB = REPO / "tests" / "data" / "known1000.ttl"
SUBJECTS = ["Q900000013", "Q900000114", "Q900000209", "Q900000252", "Q900000253", "Q900000267"]  # all have P36
CORPUS = """The capital of France is Paris, and Paris lies on the Seine.
Berlin is the capital city of Germany. Rome is the capital of Italy.
Tokyo is the largest city of Japan and its capital.
The river flows through the old town, past the cathedral and the market square.
Danielle Darrieux was a French actress; she spoke French.
"""


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer_dir: Path) -> Path:
    """A randomly initialised 4-layer Llama (hidden 32) with SmolLM2's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)  # read from the GGUF once per session
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, model_dir: Path, *, database_url: str = "", interval_s: int = 3,
                 steps: tuple[str, ...] = ("diff", "apply"), metrics_port: int = 0, max_edits_per_tick: int = 0,
                 batch_size: int = 2, v_steps: int = 4, extra: str = "") -> Path:
    corpus = path.parent / "corpus.txt"
    corpus.write_text(CORPUS * 4, encoding="utf-8")
    subjects = ", ".join(f'"{s}"' for s in SUBJECTS)
    steps_list = ", ".join(f'"{s}"' for s in steps)
    path.write_text(f"""
[state]
dir = "{path.parent / 'state'}"

[database]
url = "{database_url}"

[model]
path = "{model_dir}"
device = "cpu"

[kb]
source = "rdf"
files = ["{KB}"]
subjects = [{subjects}]

[relations]
enabled = ["P36"]

[probe]
max_new_tokens = 3
sample_unchanged = 0

[editing]
layers = [1, 2]
batch_size = {batch_size}
v_steps = {v_steps}
cov_samples = 8
corpus = "{corpus}"
retry_smaller = false

[verify]
min_efficacy_acc = 0.0
min_paraphrase_acc = 0.0
min_efficacy = 0.0
min_paraphrase = 0.0
min_specificity = 0.0
neighbours = 1

[gate]
texts = 4
max_perplexity_rise = 1e6
max_perplexity_rise_base = 1e6
max_known_drop = 1.0
max_known_drop_base = 1.0
min_retention = 0.0
max_retention_drop = 1.0

[schedule]
interval_s = {interval_s}
misfire_grace_s = 30
steps = [{steps_list}]
max_edits_per_tick = {max_edits_per_tick}

[metrics]
enabled = {'true' if metrics_port else 'false'}
bind = "127.0.0.1:{metrics_port or 9464}"

[logging]
level = "info"
format = "json"
{extra}
""", encoding="utf-8")
    return path


@dataclass
class Kbsync:
    """`python -m kbsync --config CONFIG ...` as subprocesses, with a clean environment."""

    config: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kbsync", "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=self.config.parent)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = (self.config.parent / "daemon.log").open("a")
        return subprocess.Popen(self.argv(*args), env={**self.env, **(env or {})}, stdout=log, stderr=log,
                                text=True, cwd=self.config.parent)

    @property
    def log(self) -> str:
        path = self.config.parent / "daemon.log"
        return path.read_text() if path.exists() else ""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KBSYNC_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def wait_for(predicate, timeout: float, every: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    """SIGTERM once and wait; kill (and fail) if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the daemon did not exit within {timeout}s of SIGTERM") from None


def run_in_process(config: Path, driver, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Run the real Daemon in this process's main thread (signals need it) while `driver(daemon)`
    runs in a thread; the driver stops the daemon with SIGTERM, or it is sent when the driver
    returns. Returns (exit code, daemon)."""
    import threading

    from kbsync.config import load_settings
    from kbsync.daemon.loop import Daemon
    from kbsync.daemon.notify import Notifier
    from kbsync.logs import configure_logging
    from kbsync.runtime import App

    configure_logging("info", "console")   # to this test's stderr (an earlier in-process CLI test closed its own)
    app = App(settings=load_settings(config, environ={}), run_id="test-daemon")
    daemon = Daemon(app, lambda: load_settings(config, environ={}), notifier=Notifier(environ or {}))
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            wait_for(lambda: daemon.scheduler is not None or not running.is_set(), 120, what="the daemon to start")
            if not running.is_set():
                return
            driver(daemon)
        except BaseException as exc:  # re-raised in the test's thread below
            failure.append(exc)
        finally:
            with lock:
                if running.is_set() and daemon.shutdown.stage == 0:
                    os.kill(os.getpid(), signal.SIGTERM)

    lock, running = threading.Lock(), threading.Event()
    running.set()
    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        code = daemon.run()
    finally:
        with lock:      # no SIGTERM once the daemon's handlers are gone: it would end pytest
            running.clear()
        thread.join(timeout=60)
        app.close()
    if failure:
        raise failure[0]
    return code, daemon


def migrate(config: Path) -> Path:
    """Bring the config's database to the newest schema (in process: no CLI start-up cost)."""
    from kbsync.config import load_settings
    from kbsync.store.db import upgrade

    settings = load_settings(config, environ={})
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    return config


def seed_queue(config: Path) -> int:
    """Queue the KB slice's disagreements with the real diff (RDF source, tiny model), in process."""
    from kbsync.config import load_settings
    from kbsync.store.db import open_database
    from kbsync.sync.from_settings import diff_from_settings

    settings = load_settings(config, environ={})
    db = open_database(settings.database_url)
    try:
        return diff_from_settings(settings, db, settings.state.dir, run_id="seed").queued
    finally:
        db.dispose()
