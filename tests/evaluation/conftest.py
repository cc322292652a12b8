"""A tiny random Llama saved as a HF directory, a text corpus beside it, a config pointing
kbsync at both, and a 4-edit CounterFact file in EasyEdit's reduced schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CORPUS = [
    "Danielle Darrieux speaks French. Toko Yasuda plays the guitar.",
    "Apple A5 was created by Apple. Google was founded in California.",
    "The mother tongue of Thomas Joannes Stieltjes is Dutch. Rome is in Italy.",
    "The capital of France is Paris. The Eiffel Tower is in Paris. Nokia is from Finland.",
]

# Subjects end the edit prompts: in a tiny random model, attention barely carries an edit at the
# subject to later tokens (as in tests/editing), so the prediction is read at the subject itself.
REDUCED = [
    {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux", "subject": "Danielle Darrieux",
     "target_new": "Dutch", "ground_truth": "French", "rephrase_prompt": "Danielle Darrieux speaks",
     "locality_prompt": "Toko Yasuda plays the", "locality_ground_truth": "guitar"},
    {"case_id": 1, "prompt": "The instrument of Toko Yasuda", "subject": "Toko Yasuda", "target_new": "piano",
     "ground_truth": "guitar", "rephrase_prompt": "Toko Yasuda plays the",
     "locality_prompt": "Danielle Darrieux speaks", "locality_ground_truth": "French"},
    {"case_id": 2, "prompt": "The maker of Apple A5", "subject": "Apple A5", "target_new": "Google",
     "ground_truth": "Apple", "rephrase_prompt": "Apple A5 was created by",
     "locality_prompt": "Google was founded in", "locality_ground_truth": "California"},
    {"case_id": 3, "prompt": "The city of the Eiffel Tower", "subject": "Eiffel Tower", "target_new": "Rome",
     "ground_truth": "Paris", "rephrase_prompt": "The Eiffel Tower is in",
     "locality_prompt": "The capital of France is", "locality_ground_truth": "Paris"},
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices on a shared 2-core machine: one thread is faster and fairer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_llama) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-eval"), CORPUS, max_positions=256)


@pytest.fixture
def eval_config(tiny_model_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "kbsync.toml"
    path.write_text(f"""
[state]
dir = "{tmp_path / 'state'}"

[model]
path = "{tiny_model_dir}"
device = "cpu"

[editing]
layers = [1, 2]
cov_lambda = 1.0
cov_samples = 32
corpus = "{tiny_model_dir / 'corpus.txt'}"
v_steps = 20
v_lr = 1.0
batch_size = 2
""")
    return path


@pytest.fixture
def reduced() -> list[dict]:
    return [dict(r) for r in REDUCED]


@pytest.fixture
def reduced_file(tmp_path: Path) -> Path:
    path = tmp_path / "cf-reduced.json"
    path.write_text(json.dumps(REDUCED))
    return path
