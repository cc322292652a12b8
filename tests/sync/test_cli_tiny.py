"""The weight commands through the CLI on the tiny model: apply, audit, verify, export, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow
from kbsync.store.transitions import enqueue


@pytest.fixture
def env(make_settings, tmp_path: Path) -> dict[str, str]:
    s = make_settings()
    url = s.database_url
    s.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(url)
    db = store_db.open_database(url)
    with db.session() as session:
        for qid, label, new, old in [("Q142", "France", "Berlin", "Paris"), ("Q183", "Germany", "Rome", "Berlin"),
                                     ("Q38", "Italy", "Paris", "Rome")]:
            enqueue(session, EditRequestRow(subject=qid, relation="P36", subject_label=label,
                                            prompt="The capital of {} is", target_new=new, target_new_id=f"X{new}",
                                            target_old=old, acceptable=[new], paraphrases=[], content_hash=qid), "t")
    db.dispose()
    e = s.editing
    return {
        "KBSYNC_STATE__DIR": str(s.state.dir), "KBSYNC_DATABASE__URL": url, "KBSYNC_MODEL__PATH": s.model.path,
        "KBSYNC_MODEL__DEVICE": "cpu", "KBSYNC_EDITING__LAYERS": json.dumps(e.layers),
        "KBSYNC_EDITING__COV_LAMBDA": str(e.cov_lambda), "KBSYNC_EDITING__COV_SAMPLES": str(e.cov_samples),
        "KBSYNC_EDITING__CORPUS": e.corpus, "KBSYNC_EDITING__RETRY_SMALLER": "false",
        "KBSYNC_VERIFY__MIN_EFFICACY": "0", "KBSYNC_VERIFY__MIN_PARAPHRASE": "0",
        "KBSYNC_VERIFY__MIN_EFFICACY_ACC": "0", "KBSYNC_VERIFY__MIN_PARAPHRASE_ACC": "0",
        "KBSYNC_VERIFY__MIN_SPECIFICITY": "0", "KBSYNC_VERIFY__NEIGHBOURS": "0",
        "KBSYNC_GATE__TEXTS": "4", "KBSYNC_GATE__MAX_PERPLEXITY_RISE": "1e6",
        "KBSYNC_GATE__MAX_PERPLEXITY_RISE_BASE": "1e6", "KBSYNC_GATE__MIN_RETENTION": "0",
        "KBSYNC_GATE__MAX_KNOWN_DROP": "1", "KBSYNC_GATE__MAX_KNOWN_DROP_BASE": "1",
    }


def test_apply_audit_verify_export_rollback(run_cli, env: dict[str, str], tmp_path: Path) -> None:
    dry = run_cli("apply", "--dry-run", "--batch-size", "2", env=env)
    assert dry.exit_code == 0 and "3 pending; would apply 3 in 2 batch(es)" in dry.out
    r = run_cli("apply", "--batch-size", "2", "--json", env=env)
    assert r.exit_code == 0, r.err
    report = json.loads(r.out)
    assert report["applied"] == 3 and [b["state"] for b in report["batches"]] == ["verified", "verified"]

    batches = json.loads(run_cli("audit", "--json", env=env).out)
    assert [b["state"] for b in batches] == ["verified", "verified"]
    changed = json.loads(run_cli("audit", "--batch", "2", "--json", env=env).out)
    assert [c["subject"] for c in changed] == ["Q38"]
    history = json.loads(run_cli("audit", "--subject", "Q142", "--json", env=env).out)
    assert [h["to_state"] for h in history] == ["pending", "claimed", "applied", "verified"]
    assert json.loads(run_cli("audit", "--failed", "--json", env=env).out) == []

    v = run_cli("verify", "--all", "--json", env=env)
    assert json.loads(v.out)["checked"] == 3

    out = tmp_path / "export"
    e = run_cli("export", str(out), env=env)
    assert e.exit_code == 0, e.err
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file()
    refused = run_cli("export", str(out), env=env)
    assert refused.exit_code == 3 and "not empty" in refused.err
    unknown = run_cli("export", "--version", "99", str(tmp_path / "v99"), env=env)  # issue 15 #5
    assert unknown.exit_code == 8 and "no model version 99" in unknown.err and "nothing applied" not in unknown.err

    rb = run_cli("rollback", "2", "--dry-run", env=env)
    assert rb.exit_code == 0 and "would roll back batch 2" in rb.out
    rb = run_cli("rollback", "2", "--json", env=env)
    assert rb.exit_code == 0 and json.loads(rb.out)["restores_version"] == 1
    again = run_cli("rollback", "2", env=env)
    assert again.exit_code == 8 and "not part of the current model" in again.err
    missing = run_cli("rollback", "99", env=env)
    assert missing.exit_code == 8 and "RollbackError: there is no batch 99" in missing.err
    status = json.loads(run_cli("status", "--json", env=env).out)
    assert status["current_model_version"]["batch_ids"] == [1]
    assert status["queue"]["verified"] == 2 and status["queue"]["rolled_back"] == 1
