"""[serve] reload on promote and rollback (issue 27): the engine is told, the outcome audited,
a failed reload retried and shown in status, never dropped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.models import ServeReload

from .conftest import tiny_env
from .test_endpoint import Scripted, answer

pytestmark = pytest.mark.process   # the reload command is a process; apply runs on the tiny model

RECORDER = """import json, os, sys
state = sys.argv[1]
if os.path.exists(state + ".fail"):
    print("engine refused: out of memory", file=sys.stderr)
    sys.exit(3)
with open(state, "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
print("reloaded", sys.argv[2])
"""


def _rows(env: dict[str, str]) -> list[ServeReload]:
    db = store_db.open_database(env["KBSYNC_DATABASE__URL"])
    with db.session() as s:
        rows = list(s.scalars(select(ServeReload).order_by(ServeReload.id)))
        s.expunge_all()
    db.dispose()
    return rows


def test_command_reload_on_apply_rollback_and_a_failed_reload_retried(run_cli, make_settings, tmp_path: Path) -> None:
    script, calls = tmp_path / "engine.py", tmp_path / "calls.jsonl"
    script.write_text(RECORDER)
    # the served model: answers every prompt with the edit's new value for the first two subjects
    served = Scripted(lambda n, b: (200, {}, answer(" Berlin." if "France" in b["prompt"] else " Rome.")))
    try:
        env = tiny_env(make_settings()) | {
            "KBSYNC_SERVE__RELOAD": "command", "KBSYNC_SERVE__EXPORT": "lora",
            "KBSYNC_SERVE__COMMAND": f"{sys.executable} {script} {calls} {{path}} {{version}}",
            "KBSYNC_SERVE__MAX_ATTEMPTS": "2", "KBSYNC_PROBE__ENDPOINT": served.url,
        }
        r = run_cli("apply", "--batch-size", "3", "--max-edits", "6", env=env)
        assert r.exit_code == 0, r.err
        assert "serving: version 2 reloaded (command, lora" in r.err
        assert "the served model named 2 of 6 verified edits" in r.err      # France -> Berlin, Germany -> Rome
        (first,) = [json.loads(line) for line in calls.read_text().splitlines()]
        adapter = Path(first[0])
        assert first[1] == "2" and adapter.name == "version-2" and (adapter / "adapter_config.json").is_file()
        assert (adapter / "adapter.gguf").is_file()
        assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 6

        # the engine fails: retried, recorded failed, shown in status, the export kept
        Path(f"{calls}.fail").touch()
        rb = run_cli("rollback", "2", env=env)
        assert rb.exit_code == 0, rb.err       # the rollback itself is done; the reload's failure is kept
        assert "serving: reload of version 3 FAILED after 2 attempt(s)" in rb.err
        assert "exited 3: engine refused: out of memory" in rb.err
        status = run_cli("status", env=env)
        assert "reload of version 3 FAILED after 2 attempt(s)" in status.out and "`kbsync reload`" in status.out
        data = json.loads(run_cli("status", "--json", env=env).out)["serving"]
        assert data["last"]["state"] == "failed" and data["last_ok"]["model_version_id"] == 2

        # fixed: `kbsync reload` loads the current version (batch 1 only), older exports removed
        Path(f"{calls}.fail").unlink()
        again = run_cli("reload", env=env)
        assert again.exit_code == 0, again.err
        assert "serving: version 3 reloaded" in again.out
        assert json.loads(calls.read_text().splitlines()[-1])[1] == "3"
        assert sorted(p.name for p in adapter.parent.iterdir()) == ["version-3"]
        assert json.loads((adapter.parent / "version-3" / "adapter_config.json").read_text())["r"] == 3
        rows = _rows(env)
        assert [(r.action, r.state, r.attempts, r.model_version_id) for r in rows] == [
            ("apply", "ok", 1, 2), ("rollback", "failed", 2, 3), ("retry", "ok", 1, 3)]
        assert rows[0].probed == 6 and rows[0].agreed == 2

        # nothing changed since: apply reloads nothing
        quiet = run_cli("apply", env=env)
        assert quiet.exit_code == 0 and "serving:" not in quiet.err
    finally:
        served.close()


def test_vllm_shape_unload_then_load(run_cli, make_settings, tmp_path: Path) -> None:
    """reload = vllm: the calls vLLM's runtime LoRA API takes (a scripted server: vLLM needs a GPU)."""
    seen: list[tuple[str, dict]] = []

    def plan(n: int, body: dict) -> tuple[int, dict, dict]:
        seen.append((body.get("lora_path", ""), body))
        return (404, {}, {"detail": "not loaded"}) if n == 1 else (200, {}, {})

    vllm = Scripted(plan)
    try:
        env = tiny_env(make_settings()) | {"KBSYNC_SERVE__RELOAD": "vllm", "KBSYNC_SERVE__URL": vllm.url,
                                           "KBSYNC_SERVE__ADAPTER_NAME": "kb"}
        r = run_cli("apply", "--batch-size", "2", "--max-edits", "2", env=env)
        assert r.exit_code == 0, r.err
        assert "serving: version 1 reloaded (vllm, lora" in r.err
        assert [b["lora_name"] for _, b in seen] == ["kb", "kb"]
        assert seen[1][0].endswith("version-1")           # unload (not loaded yet: 404 is fine), then load
        rb = run_cli("rollback", "1", env=env)
        assert rb.exit_code == 0 and "serving: version 2 reloaded (vllm, lora unloaded)" in rb.err
        assert [b for _, b in seen[2:]] == [{"lora_name": "kb"}]   # the base: unload only
    finally:
        vllm.close()
