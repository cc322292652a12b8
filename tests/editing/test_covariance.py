from __future__ import annotations

import json

import pytest
import torch

from kbsync.editing.covariance import (
    HFDatasetCorpus,
    JsonlCorpus,
    ModelSampleCorpus,
    TextFileCorpus,
    cache_path,
    second_moments,
)
from kbsync.errors import ConfigError


def test_text_and_jsonl_corpora(tmp_path, corpus_texts):
    p = tmp_path / "c.txt"
    p.write_text("first doc\nstill first\n\nsecond doc\n")
    assert list(TextFileCorpus(p).texts()) == ["first doc\nstill first", "second doc"]
    assert list(TextFileCorpus(p, per="line").texts()) == ["first doc", "still first", "second doc"]
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(corpus_texts[:3])))
    assert list(JsonlCorpus(j).texts()) == corpus_texts[:3]
    assert TextFileCorpus(p).identity != TextFileCorpus(p, per="line").identity
    with pytest.raises(ConfigError):
        TextFileCorpus(tmp_path / "missing.txt")


def test_hf_corpus_offline_fails_clearly():
    with pytest.raises(ConfigError, match="offline|datasets"):
        next(HFDatasetCorpus("wikitext-not-here").texts())


def test_cache_hit_is_identical_and_key_has_four_parts(tiny_llama, tmp_path, corpus_texts):
    model, tok, adapter = tiny_llama
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps({"text": t}) for t in corpus_texts))
    corpus = JsonlCorpus(j)
    a = second_moments(model, tok, adapter, [1, 2], corpus, 6, tmp_path / "cov", model_identity="m1")
    files = sorted((tmp_path / "cov").iterdir())
    assert len(files) == 2
    c = a[1]
    assert c.dtype == torch.float64 and c.shape == (64, 64) and torch.allclose(c, c.T)
    assert torch.linalg.eigvalsh(c).min() > -1e-9  # PSD
    b = second_moments(model, tok, adapter, [1, 2], corpus, 6, tmp_path / "cov", model_identity="m1")
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = cache_path(tmp_path, "m1", 1, corpus.identity, 6)
    assert len({base, cache_path(tmp_path, "m2", 1, corpus.identity, 6),
                cache_path(tmp_path, "m1", 2, corpus.identity, 6),
                cache_path(tmp_path, "m1", 1, "other", 6),
                cache_path(tmp_path, "m1", 1, corpus.identity, 7)}) == 5


def test_model_samples_are_deterministic(tiny_llama):
    model, tok, _ = tiny_llama
    c1 = ModelSampleCorpus(model, tok, seed=3, n_tokens=6, batch_size=4)
    c2 = ModelSampleCorpus(model, tok, seed=3, n_tokens=6, batch_size=4)
    a = [t for _, t in zip(range(6), c1.texts(), strict=False)]
    b = [t for _, t in zip(range(6), c2.texts(), strict=False)]
    assert a == b and len(set(a)) > 1


def test_a_stop_check_abandons_the_pass_and_caches_nothing(tiny_llama, tmp_path, corpus_texts):
    """Key statistics check the stop they are given (issue 15 #6: SIGTERM during them did nothing)."""
    model, tok, adapter = tiny_llama
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps({"text": t}) for t in corpus_texts))
    calls = []

    class Stopped(Exception):
        pass

    def check_stop() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Stopped

    with pytest.raises(Stopped):
        second_moments(model, tok, adapter, [1, 2], JsonlCorpus(j), 6, tmp_path / "cov", model_identity="m1",
                       batch_size=2, check_stop=check_stop)
    assert len(calls) == 2 and not list((tmp_path / "cov").glob("*"))
