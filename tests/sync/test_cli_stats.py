"""`kbsync stats` and `kbsync status` on key statistics (issue 12), on the tiny model writing its own
corpus: stats prints a measured estimate before the rest of the pass, status says whether the
statistics of the configured model, layers and corpus are cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbsync.store import db as store_db


@pytest.fixture
def env(make_settings, tmp_path: Path) -> dict[str, str]:
    s = make_settings()
    s.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(s.database_url)
    return {"KBSYNC_STATE__DIR": str(s.state.dir), "KBSYNC_DATABASE__URL": s.database_url,
            "KBSYNC_MODEL__PATH": s.model.path, "KBSYNC_MODEL__DEVICE": "cpu", "KBSYNC_EDITING__LAYERS": "[1, 2]",
            "KBSYNC_EDITING__COV_SAMPLES": "80"}  # [editing] corpus left at auto: model-samples for this model


def statistics(run_cli, env: dict[str, str]) -> dict:
    r = run_cli("status", "--json", env=env)
    assert r.exit_code == 0, r.err
    return json.loads(r.out)["key_statistics"]


def test_stats_estimates_first_then_status_shows_them_cached(run_cli, env: dict[str, str], tiny_model_dir) -> None:
    before = statistics(run_cli, env)
    assert before["cached"] is False and before["corpus"] == "model-samples"
    assert "not cached" in run_cli("status", env=env).out

    r = run_cli("stats", env=env)
    assert r.exit_code == 0, r.err
    lines = r.out.splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate: "))
    ready = next(i for i, line in enumerate(lines) if " ready in " in line)
    assert estimate < ready  # printed while the pass still had texts to go
    assert "texts/s measured on the first 32: the pass of 80 texts takes about" in lines[estimate]
    assert "a first `kbsync apply` waits this long" in lines[estimate]

    after = statistics(run_cli, env)
    assert after == {"cached": True, "corpus": "model-samples", "layers": [1, 2], "n_samples": 80,
                     "model_identity": after["model_identity"]} and len(after["model_identity"]) == 64
    assert "statistics  cached (layers [1, 2], 80 texts of model-samples)" in run_cli("status", env=env).out
    again = run_cli("stats", env=env)
    assert again.exit_code == 0 and "are cached" in again.out and "estimate:" not in again.out

    # another corpus, other layers: not cached for what is configured now
    other = {**env, "KBSYNC_EDITING__CORPUS": str(tiny_model_dir / "corpus.txt")}
    assert statistics(run_cli, other)["cached"] is False
    assert statistics(run_cli, {**env, "KBSYNC_EDITING__LAYERS": "[2, 3]"})["cached"] is False
    # a cache file removed: no longer cached
    stats_dir = Path(env["KBSYNC_STATE__DIR"]) / "cache" / "stats"
    next(stats_dir.glob("mom2-*.safetensors")).unlink()
    assert statistics(run_cli, env)["cached"] is False
