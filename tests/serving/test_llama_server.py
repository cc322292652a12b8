"""End to end through a real serving engine (issue 27): llama.cpp's server, built from PyPI's
llama-cpp-python sdist (`make llama-server`), serves the bundled model on 127.0.0.1.

diff asks it ([probe] endpoint); apply edits in-process and verifies; the [serve] command
restarts the server on the exported GGUF (scripts/serve_llama.py); the server now answers the
new value; rollback, and it answers the old one again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import gguf
import pytest
from required import bundled_gguf, llama_server
from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow, ServeReload

pytestmark = [pytest.mark.slow, pytest.mark.process]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "kbsync" / "data" / "demo.ttl"
SERVE = ROOT / "scripts" / "serve_llama.py"
CHANGED = {"Q900001312": "Toyota", "Q900000900": "Turkey"}   # Windows Media Player P127, Nishi-Matsuura P17
AGREEING = ["Q900000940"]                                  # Panama P37: the model knows it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, prompt: str) -> str:
    body = json.dumps({"prompt": prompt, "max_tokens": 8, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["choices"][0]["text"]


@pytest.fixture
def served(tmp_path: Path):
    """llama-server on the bundled GGUF; (port, pid file); stopped afterwards."""
    binary, model = llama_server(), bundled_gguf()
    port, pid_file = free_port(), tmp_path / "llama.pid"
    started = subprocess.run([sys.executable, str(SERVE), "--pid-file", str(pid_file), "--port", str(port),
                              "--binary", str(binary), str(model)], capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    yield port, pid_file, binary
    subprocess.run([sys.executable, str(SERVE), "--pid-file", str(pid_file), "--stop"], timeout=60)


def test_diff_apply_reload_rollback_through_llama_server(run_cli, served, bundled, bundled_state_dir: Path,
                                                         shared_stats: Path, tmp_path: Path) -> None:
    port, pid_file, binary = served
    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    (state / "cache").mkdir()
    (state / "models" / "smollm2-135m").symlink_to(bundled.source_dir)   # de-quantised once a session
    (state / "cache" / "stats").symlink_to(shared_stats)
    env = {
        "KBSYNC_MODEL__PATH": "builtin:smollm2-135m", "KBSYNC_MODEL__DEVICE": "cpu",
        "KBSYNC_STATE__DIR": str(state), "KBSYNC_DATABASE__URL": f"sqlite:///{tmp_path / 'kbsync.db'}",
        "KBSYNC_KB__FILES": json.dumps([str(DEMO)]),
        "KBSYNC_EDITING__CORPUS": "builtin:smollm2-samples", "KBSYNC_EDITING__COV_SAMPLES": "512",
        "KBSYNC_PROBE__ENDPOINT": f"http://127.0.0.1:{port}",
        "KBSYNC_SERVE__RELOAD": "command", "KBSYNC_SERVE__EXPORT": "gguf",
        "KBSYNC_SERVE__COMMAND": f"{sys.executable} {SERVE} --pid-file {pid_file} --port {port} "
                                 f"--binary {binary} {{path}}",
    }
    assert run_cli("db", "upgrade", env=env).exit_code == 0

    # 1) diff through the server: the two changed facts are queued, the known one agrees
    subjects = [a for q in [*CHANGED, *AGREEING] for a in ("--subject", q)]
    d = run_cli("diff", "--json", *subjects, env=env)
    assert d.exit_code == 0, d.err[-2000:]
    diff = json.loads(d.out)
    assert diff["probed"] == 3 and diff["queued"] == 2, diff

    # 2) apply in-process (one edit a batch), verify; the reload restarts the server on the GGUF
    r = run_cli("apply", "--batch-size", "1", "--json", env=env)
    assert r.exit_code == 0, r.err[-3000:]
    db = store_db.open_database(env["KBSYNC_DATABASE__URL"])
    with db.session() as s:
        verified = list(s.scalars(select(EditRequestRow).where(EditRequestRow.state == "verified")))
        (reload,) = s.scalars(select(ServeReload)).all()
        s.expunge_all()
    assert verified, r.out
    assert reload.state == "ok" and reload.path.endswith(f"version-{reload.model_version_id}.gguf"), reload.detail
    assert reload.probed == len(verified) and reload.agreed == len(verified)    # the served model says it
    exported = gguf.GGUFReader(reload.path)
    assert {t.name for t in exported.tensors if t.tensor_type == gguf.GGMLQuantizationType.F32
            and "ffn_down" in t.name} == {f"blk.{n}.ffn_down.weight" for n in range(4, 9)}
    last = verified[-1]
    prompt = last.prompt.replace("{}", last.subject_label)
    assert last.target_new.lower() in ask(port, prompt).lower()

    # 3) rollback: the server is restarted on the version without it, and answers the old value
    rb = run_cli("rollback", str(last.batch_id), env=env)
    assert rb.exit_code == 0, rb.err[-2000:]
    assert "serving: " in rb.err and "reloaded (command, gguf" in rb.err
    with db.session() as s:
        rows = list(s.scalars(select(ServeReload).order_by(ServeReload.id)))
    assert [r.action for r in rows] == ["apply", "rollback"] and rows[-1].state == "ok"
    answer = ask(port, prompt)
    assert last.target_new.lower() not in answer.lower() and last.target_old.lower() in answer.lower(), answer
    db.dispose()
    assert os.path.exists(pid_file)
