from __future__ import annotations

import torch

from kbsync.editing.covariance import ModelSampleCorpus, TextFileCorpus, second_moments
from kbsync.editing.hparams import EditHyperParams
from kbsync.editing.memit import compute_delta
from kbsync.editing.nullspace import PreservedKeys
from kbsync.editing.request import EditRequest
from kbsync.editing.rows import target_ids

# Subjects end their prompts: in a tiny random model, attention barely carries an edit at the
# subject to later tokens, so the test reads the prediction at the subject itself.
REQS = [
    EditRequest("The mother tongue of {}", "Thomas Joannes Stieltjes", "French"),
    EditRequest("The capital of {}", "France", "Tokyo"),
]


def score(model, tok, prompt: str, target: str) -> float:
    """Mean log-probability of " target" after prompt (teacher forcing)."""
    p, t = tok(prompt)["input_ids"], target_ids(tok, target)
    with torch.no_grad():
        logp = model(torch.tensor([p + t])).logits[0].log_softmax(-1)
    return float(sum(logp[len(p) - 1 + j, x] for j, x in enumerate(t)) / len(t))


def _moments(model, tok, adapter, tmp_path, texts, layers=(1, 2)):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(texts * 3))
    text = second_moments(model, tok, adapter, layers, TextFileCorpus(path), 18, tmp_path / "cov",
                          model_identity="tiny")
    sampled = second_moments(model, tok, adapter, layers, ModelSampleCorpus(model, tok, n_tokens=24, batch_size=20),
                             60, tmp_path / "cov", model_identity="tiny")
    return {layer: (text[layer] + sampled[layer]) / 2 for layer in layers}


def _hp(**kw):
    base = dict(layers=(1, 2), v_steps=20, v_lr=1.0, n_prefixes=2, prefix_len=4, clamp_factor=4.0,
                kl_factor=0.0, cov_lambda=1.0)
    base.update(kw)
    return EditHyperParams(**base)


def test_compute_delta_is_pure_and_moves_the_model_toward_targets(tiny, tmp_path, corpus_texts):
    model, tok, adapter = tiny  # Llama and GPT-2 (Conv1D)
    cov = _moments(model, tok, adapter, tmp_path, corpus_texts)
    before_sd = {k: v.clone() for k, v in model.state_dict().items()}
    before = [score(model, tok, r.prompt.format(r.subject), r.target_new) for r in REQS]
    timings: dict = {}
    delta = compute_delta(model, tok, adapter, REQS, _hp(), cov, timings=timings)
    assert all(torch.equal(v, before_sd[k]) for k, v in model.state_dict().items())  # pure
    assert set(delta.names) == {adapter.weight_name(1), adapter.weight_name(2)}
    for name in delta.names:
        u, v = delta.factors[name]
        assert u.dtype == torch.float32 and u.shape[1] == v.shape[1] == len(REQS)
    assert set(delta.keys) == {1, 2} and delta.keys[2].shape[1] == len(REQS)
    assert {"targets_s", "keys_s", "solve_s"} <= set(timings)
    delta.apply(model, adapter)
    after = [score(model, tok, r.prompt.format(r.subject), r.target_new) for r in REQS]
    assert all(a > b + 1.0 for a, b in zip(after, before, strict=True)), (before, after)


def test_alphaedit_algorithm_runs_and_keeps_earlier_keys(tiny_llama, tmp_path, corpus_texts):
    model, tok, adapter = tiny_llama
    cov = _moments(model, tok, adapter, tmp_path, corpus_texts)
    # keep the lower half of C's spectrum as the null space (a tiny corpus has no exact null space)
    thr = max(float(torch.linalg.eigvalsh(c).median()) for c in cov.values())
    hp = _hp(algorithm="alphaedit", nullspace_threshold=thr, alphaedit_l2=1.0)
    pk = PreservedKeys()
    first = compute_delta(model, tok, adapter, REQS[:1], hp, cov, preserved=pk)
    pk.add_delta(first)
    assert pk.n_keys == {1: 1, 2: 1}
    second = compute_delta(model, tok, adapter, REQS[1:], hp, cov, preserved=pk)
    assert second.meta["algorithm"] == "alphaedit"
    before = score(model, tok, "The capital of France", "Tokyo")
    second.apply(model, adapter)
    assert score(model, tok, "The capital of France", "Tokyo") > before


def test_edit_sequence_is_compute_apply_and_remember_keys(tiny_llama, tmp_path, corpus_texts):
    from types import SimpleNamespace

    from kbsync.editing.sequence import EditSequence

    model, tok, adapter = tiny_llama
    cov = _moments(model, tok, adapter, tmp_path, corpus_texts)
    hp = _hp(edit_memory=1.0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    pk = PreservedKeys()  # by hand: the loop the sequence replaces
    for reqs in (REQS[:1], REQS[1:]):
        delta = compute_delta(model, tok, adapter, reqs, hp, cov, preserved=pk)
        delta.apply(model, adapter)
        pk.add_delta(delta, hp.preserved_weight)
    by_hand_sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(original)

    sequence = EditSequence(SimpleNamespace(model=model, tokenizer=tok, adapter=adapter), hp, cov)
    deltas = [sequence.edit(reqs) for reqs in (REQS[:1], REQS[1:])]
    assert sequence.preserved is not None and sequence.preserved.n_keys == {1: 2, 2: 2}
    assert all(torch.equal(v, by_hand_sd[k]) for k, v in model.state_dict().items())  # same arithmetic
    assert [d.keys[2].shape[1] for d in deltas] == [1, 1]
    model.load_state_dict(original)
    assert EditSequence(SimpleNamespace(model=model, tokenizer=tok, adapter=adapter),
                        _hp(edit_memory=0.0), cov).preserved is None  # plain MEMIT keeps no earlier keys
