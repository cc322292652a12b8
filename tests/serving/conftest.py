"""A tiny model with three applied batches: what the export tests read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow
from kbsync.store.transitions import enqueue

EDITS = [("Q142", "France", "Berlin", "Paris"), ("Q183", "Germany", "Rome", "Berlin"),
         ("Q38", "Italy", "Paris", "Rome"), ("Q31", "Belgium", "Dutch", "Brussels"),
         ("Q29", "Spain", "Apple", "Madrid"), ("Q40", "Austria", "Guitar", "Vienna")]


def tiny_env(settings) -> dict[str, str]:
    """The tiny model's settings as KBSYNC_ variables, with the queue filled with EDITS."""
    url = settings.database_url
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(url)
    db = store_db.open_database(url)
    with db.session() as session:
        for qid, label, new, old in EDITS:
            enqueue(session, EditRequestRow(subject=qid, relation="P36", subject_label=label,
                                            prompt="The capital of {} is", target_new=new, target_new_id=f"X{new}",
                                            target_old=old, acceptable=[new], paraphrases=[], content_hash=qid), "t")
    db.dispose()
    e = settings.editing
    return {
        "KBSYNC_STATE__DIR": str(settings.state.dir), "KBSYNC_DATABASE__URL": url,
        "KBSYNC_MODEL__PATH": settings.model.path, "KBSYNC_MODEL__DEVICE": "cpu",
        "KBSYNC_EDITING__LAYERS": json.dumps(e.layers), "KBSYNC_EDITING__COV_LAMBDA": str(e.cov_lambda),
        "KBSYNC_EDITING__COV_SAMPLES": str(e.cov_samples), "KBSYNC_EDITING__CORPUS": e.corpus,
        "KBSYNC_EDITING__RETRY_SMALLER": "false",
        "KBSYNC_VERIFY__MIN_EFFICACY": "0", "KBSYNC_VERIFY__MIN_PARAPHRASE": "0",
        "KBSYNC_VERIFY__MIN_EFFICACY_ACC": "0", "KBSYNC_VERIFY__MIN_PARAPHRASE_ACC": "0",
        "KBSYNC_VERIFY__MIN_SPECIFICITY": "0", "KBSYNC_VERIFY__NEIGHBOURS": "0",
        "KBSYNC_GATE__TEXTS": "4", "KBSYNC_GATE__MAX_PERPLEXITY_RISE": "1e6",
        "KBSYNC_GATE__MAX_PERPLEXITY_RISE_BASE": "1e6", "KBSYNC_GATE__MIN_RETENTION": "0",
        "KBSYNC_GATE__MAX_KNOWN_DROP": "1", "KBSYNC_GATE__MAX_KNOWN_DROP_BASE": "1",
    }


@pytest.fixture
def three_batches(run_cli, make_settings) -> dict[str, str]:
    """The tiny model after `kbsync apply` of 6 edits in 3 batches of 2; its environment."""
    env = tiny_env(make_settings())
    r = run_cli("apply", "--batch-size", "2", "--json", env=env)
    assert r.exit_code == 0, r.err
    assert [b["state"] for b in json.loads(r.out)["batches"]] == ["verified"] * 3
    return env


def model_dir(env: dict[str, str]) -> Path:
    return Path(env["KBSYNC_MODEL__PATH"])
