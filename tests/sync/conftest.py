"""A tiny random Llama saved as a HF directory (byte-level BPE tokenizer), and settings that
point kbsync at it: the apply/rollback machinery runs end to end in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbsync.config import Settings

CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "Danielle Darrieux speaks French. Toko Yasuda plays the guitar.",
    "Apple A5 was created by Apple. Google was founded in California.",
    "The mother tongue of Thomas Joannes Stieltjes is Dutch. Rome is in Italy.",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_llama) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), CORPUS)


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

