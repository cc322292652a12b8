from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = ["The capital of France is Paris. The capital of Germany is Berlin.",
          "Danielle Darrieux speaks French. Rome is in Italy."]


@pytest.fixture(scope="session")
def tiny_tied_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_llama) -> Path:
    """The tiny Llama with tied embeddings (as SmolLM2 has): a tied weight must be saved once."""
    from transformers import AutoModelForCausalLM

    out = make_tiny_llama(tmp_path_factory.mktemp("tiny-tied"), CORPUS)
    model = AutoModelForCausalLM.from_pretrained(out)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    return out
