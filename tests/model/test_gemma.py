"""builtin:gemma3-270m, the second built-in model (optional: skips without `make setup-gemma`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kbsync.editing.configured import corpus_for
from kbsync.editing.covariance import second_moments
from kbsync.editing.hparams import defaults_for
from kbsync.editing.memit import compute_delta
from kbsync.editing.request import EditRequest
from kbsync.editing.rows import align
from kbsync.editing.stats_cache import resolve_corpus
from kbsync.editing.upper import UpperStack, lower_hidden
from kbsync.errors import ModelError
from kbsync.model.loading import check_builtin
from kbsync.model.probe import answer_matches
from kbsync.model.scoring import greedy_answers, target_logprobs
from kbsync.model.tokens import encode_row, pad_id_of


def test_gemma_builtin_is_named_and_its_corpus_shipped() -> None:
    assert resolve_corpus("auto", "builtin:gemma3-270m") == "builtin:smollm2-samples"  # docs/models.md: why
    with pytest.raises(ModelError, match="unknown builtin model 'gemma4'; use one of builtin:smollm2-135m, "
                                         "builtin:gemma3-270m"):
        check_builtin("gemma4")
    assert defaults_for("gemma3", 18).layers == (1, 2, 3, 4)


def test_gemma_without_its_extra_says_how_to_install_it(monkeypatch, tmp_path: Path) -> None:
    from kbsync.model import loading

    monkeypatch.setitem(loading.BUILTINS, "gemma3-270m", "no_such_package_kbsync_test")
    for call in (lambda: check_builtin("gemma3-270m"),
                 lambda: loading.load_model("builtin:gemma3-270m", state_dir=tmp_path, device="cpu")):
        with pytest.raises(ModelError, match="needs the optional extra 'gemma': `make setup-gemma`"):
            call()
    assert not (tmp_path / "models").exists()


def test_gemma_loads_with_its_family(gemma) -> None:
    a = gemma.adapter
    assert (a.family, a.n_layers, a.post_mlp_norm) == ("gemma3", 18, "model.layers.{}.post_feedforward_layernorm")
    assert gemma.model.config.model_type == "gemma3_text"


@torch.no_grad()
def test_gemma_upper_stack_equals_its_forward(gemma) -> None:
    model, tok, adapter = gemma.model, gemma.tokenizer, gemma.adapter
    rows = [encode_row(tok, t, s) for t, s in [("The Eiffel Tower is in the city of", "The Eiffel Tower"),
                                                 ("Danielle Darrieux's mother tongue is", "Danielle Darrieux")]]
    batch = align(rows, pad_id_of(tok))
    hidden = lower_hidden(model, adapter, 5, batch)
    stack = UpperStack(model, adapter, 5, hidden, batch)
    logits = adapter.logits(model, stack.forward(stack.suffix))
    for r, row in enumerate(rows):
        ref = model(torch.tensor([row.ids])).logits[0, row.anchor:]
        torch.testing.assert_close(logits[r, : len(row.ids) - row.anchor], ref, rtol=1e-3, atol=1e-3)


def test_gemma_takes_edits(gemma, shared_stats: Path) -> None:
    """Three edits on the real weights: each one's greedy answer names its new value, and the solve
    lands on its targets through Gemma's post-MLP norm. (The first-order inverse of that norm this
    replaced missed them by 0.30 ||h|| on 30 CounterFact edits, and its greedy efficacy on 100 was 0.00.)"""
    reqs = [EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", 0),
            EditRequest("{} is located in the continent of", "Sri Lanka", "Europe", "Asia", 1),
            EditRequest("{}, which is located in", "Toko Yasuda", "Sweden", "Japan", 2)]
    hp = defaults_for(gemma.adapter.family, gemma.adapter.n_layers)
    corpus = corpus_for("auto", gemma)
    cov = second_moments(gemma, gemma.tokenizer, gemma.adapter, hp.layers, corpus, 128, shared_stats)
    prompts = [r.prompt.format(r.subject) for r in reqs]
    delta = compute_delta(gemma, gemma.tokenizer, gemma.adapter, reqs, hp, cov)
    applied = delta.apply(gemma.model, gemma.adapter)
    try:
        new = target_logprobs(gemma.model, gemma.tokenizer, prompts, [r.target_new for r in reqs])
        old = target_logprobs(gemma.model, gemma.tokenizer, prompts, [r.target_old for r in reqs])
        answers = greedy_answers(gemma.model, gemma.tokenizer, prompts, max_new_tokens=4)
    finally:
        applied.revert()
    assert bool((new > old).all()), (new, old, delta.meta)
    assert float(delta.meta["z_rel_error_mean"]) < 0.1, delta.meta
    assert all(answer_matches(a, [r.target_new]) for a, r in zip(answers, reqs, strict=True)), answers  # verify's rule
