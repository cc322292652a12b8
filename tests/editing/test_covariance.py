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


def test_a_corpus_shorter_than_cov_samples_uses_every_text_and_says_so(tiny_llama, tmp_path, corpus_texts):
    from structlog.testing import capture_logs

    from kbsync.editing.covariance import samples_for

    model, tok, adapter = tiny_llama
    p = tmp_path / "c.txt"
    p.write_text("\n".join(corpus_texts))
    corpus = TextFileCorpus(p)
    assert samples_for(corpus, 1000) == len(corpus_texts) and samples_for(corpus, 2) == 2
    with capture_logs() as logs:
        short = second_moments(model, tok, adapter, [1], corpus, 1000, tmp_path)
    assert [e["texts"] for e in logs if e["event"] == "stats.corpus_short"] == [len(corpus_texts)]
    # cached under the number of texts used, and equal to asking for exactly that many
    assert cache_path(tmp_path, "x", 1, "y", len(corpus_texts)).name.endswith(f"-n{len(corpus_texts)}.safetensors")
    exact = second_moments(model, tok, adapter, [1], corpus, len(corpus_texts), tmp_path / "other")
    assert torch.equal(short[1], exact[1])
    assert len(list(tmp_path.glob(f"mom2-*-n{len(corpus_texts)}.safetensors"))) == 1


def test_the_shipped_corpus_and_the_bundled_models_default():
    """[editing] corpus = auto: the bundled model reads its shipped texts; cov_samples = 2000 asks for
    more than the 512 shipped, so all 512 are used."""
    from importlib import resources

    from kbsync.editing.covariance import samples_for
    from kbsync.editing.hparams import SMOLLM2_135M
    from kbsync.editing.stats_cache import resolve_corpus

    assert resolve_corpus("auto", "builtin:smollm2-135m") == "builtin:smollm2-samples"
    assert resolve_corpus("auto", "/models/llama") == "model-samples"
    assert resolve_corpus("model-samples", "builtin:smollm2-135m") == "model-samples"
    shipped = TextFileCorpus(resources.files("kbsync").joinpath("data", "smollm2-samples.txt"))
    assert SMOLLM2_135M.cov_samples == 2000 and samples_for(shipped, SMOLLM2_135M.cov_samples) == 512


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_each_builtin_models_own_texts_are_shipped_with_held_out_text_beside_them(name):
    """kbsync/data/NAME-samples.txt: 512 texts the model sampled itself (seed 0); NAME-heldout.txt: 16 from
    seed 1, the gate's perplexity text (scripts/make_corpus.py writes both)."""
    from importlib import resources
    from types import SimpleNamespace

    from kbsync.editing.configured import corpus_for

    data = resources.files("kbsync").joinpath("data")
    for stem, n in ((f"{name}-samples", 512), (f"{name}-heldout", 16)):
        texts = list(TextFileCorpus(data.joinpath(stem + ".txt")).texts())
        assert len(texts) == n and len(set(texts)) == n and all(t.strip() for t in texts)
    with pytest.raises(ConfigError, match="'builtin:nope' is not shipped; use builtin:gemma3-samples or "
                                          "builtin:smollm2-samples, a file or model-samples"):
        corpus_for("builtin:nope", SimpleNamespace(spec="/models/x"))  # type: ignore[arg-type]


def test_pass_clock_measures_the_rate_then_estimates():
    from kbsync.editing.covariance import PassClock, duration

    now = [100.0]
    clock = PassClock(2000, first=32, clock=lambda: now[0])
    now[0] += 8.0
    clock.update(16)
    assert not clock.measured
    now[0] += 8.0
    clock.update(32)  # 32 texts in 16 s: 2 texts/s
    assert clock.measured and clock.rate == 2.0 and clock.eta_s == 984.0
    assert clock.estimate() == ("2.00 texts/s measured on the first 32: the pass of 2000 texts takes about "
                                "17 min (16 min left)")
    assert (duration(30), duration(600), duration(9000)) == ("30 s", "10 min", "2.5 h")
