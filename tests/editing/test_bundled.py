"""The bundled SmolLM2-135M: 10 CounterFact edits in one batch each win on their own prompt."""

from __future__ import annotations

import json

import pytest
import torch
from required import shared_data  # tests/ is on sys.path

from kbsync.editing.covariance import second_moments
from kbsync.editing.hparams import defaults_for
from kbsync.editing.memit import compute_delta
from kbsync.editing.request import EditRequest


@pytest.mark.slow
def test_ten_counterfact_edits_win_on_their_prompts(bundled, shared_stats):
    counterfact = shared_data("counterfact-train.json")
    from kbsync.editing.configured import corpus_for
    from kbsync.model.scoring import target_logprobs

    lm = bundled
    recs = [r for r in json.loads(counterfact.read_text()) if r["subject"] in r["prompt"]][:10]
    reqs = [EditRequest(r["prompt"], r["subject"], r["target_new"], r["ground_truth"]) for r in recs]
    hp = defaults_for(lm.adapter.family, lm.adapter.n_layers)
    corpus = corpus_for("builtin:smollm2-samples", lm)  # text the model sampled once, shipped
    cov = second_moments(lm, lm.tokenizer, lm.adapter, hp.layers, corpus, 512, shared_stats)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    delta = compute_delta(lm, lm.tokenizer, lm.adapter, reqs, hp, cov)
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    prompts = [r["prompt"] for r in recs]
    applied = delta.apply(lm.model, lm.adapter)
    new = target_logprobs(lm.model, lm.tokenizer, prompts, [r["target_new"] for r in recs])
    old = target_logprobs(lm.model, lm.tokenizer, prompts, [r["ground_truth"] for r in recs])
    applied.revert()
    assert (new > old).all(), list(zip(prompts, new.tolist(), old.tolist(), strict=True))
