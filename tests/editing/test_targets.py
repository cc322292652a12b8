from __future__ import annotations

import torch

from kbsync.editing.hparams import EditHyperParams
from kbsync.editing.request import EditRequest
from kbsync.editing.targets import compute_targets, context_templates

REQS = [
    EditRequest("{}, the", "Toko Yasuda", "guitar"),
    EditRequest("The capital of {} is", "France", "Tokyo"),
    EditRequest("Apple A5 was created by", "Apple A5", "Google"),
]


def _hp(**kw):
    base = dict(layers=(1, 2), v_steps=8, v_lr=0.5, n_prefixes=2, prefix_len=4, early_stop_loss=0.0)
    base.update(kw)
    return EditHyperParams(**base)


def test_templates_are_deterministic(tiny_llama):
    model, tok, _ = tiny_llama
    hp = _hp()
    a = context_templates(model, tok, hp)
    context_templates.__globals__["_TEMPLATE_CACHE"].clear()
    b = context_templates(model, tok, hp)
    assert a == b and a[0] == "{}" and len(a) == 3 and all(t.endswith(". {}") for t in a[1:])


def test_batched_targets_equal_one_at_a_time(tiny):
    model, tok, adapter = tiny
    hp = _hp()
    tpl = context_templates(model, tok, hp)
    together = compute_targets(model, tok, adapter, REQS, hp, tpl)
    for i, req in enumerate(REQS):
        alone = compute_targets(model, tok, adapter, [req], hp, tpl)
        torch.testing.assert_close(alone.z[0], together.z[i], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(alone.h[0], together.h[i], rtol=1e-5, atol=1e-5)
    assert (together.z - together.h).norm(dim=1).min() > 0  # delta moved


def test_early_stopping_is_per_edit_and_clamp_holds(tiny_llama):
    model, tok, adapter = tiny_llama
    hp = _hp(early_stop_loss=1e9, clamp_factor=0.1)  # every edit stops at step 0
    tpl = context_templates(model, tok, hp)
    t = compute_targets(model, tok, adapter, REQS, hp, tpl)
    assert torch.equal(t.z, t.h) and (t.steps == 0).all()
    hp = _hp(clamp_factor=0.1, v_lr=5.0)
    t = compute_targets(model, tok, adapter, REQS, hp, tpl)
    assert ((t.z - t.h).norm(dim=1) <= 0.1 * t.h.norm(dim=1) * (1 + 1e-5)).all()


def test_targets_lower_the_loss(tiny_llama):
    model, tok, adapter = tiny_llama
    hp = _hp(v_steps=15)
    tpl = context_templates(model, tok, hp)
    first = compute_targets(model, tok, adapter, REQS, _hp(v_steps=1), tpl).loss
    last = compute_targets(model, tok, adapter, REQS, hp, tpl).loss
    assert (last < first).all()


def test_batched_equals_single_with_early_stopping(tiny_llama):
    model, tok, adapter = tiny_llama
    tpl = context_templates(model, tok, _hp())
    start = compute_targets(model, tok, adapter, REQS, _hp(v_steps=1), tpl).loss  # losses at delta = 0
    hp = _hp(early_stop_loss=float(start.sort().values[1]) + 1e-4)  # the lowest two stop at once
    together = compute_targets(model, tok, adapter, REQS, hp, tpl)
    assert (together.steps == 0).sum() >= 1 and (together.steps > 0).sum() >= 1
    for i, req in enumerate(REQS):
        alone = compute_targets(model, tok, adapter, [req], hp, tpl)
        assert int(alone.steps[0]) == int(together.steps[i])
        torch.testing.assert_close(alone.z[0], together.z[i], rtol=1e-4, atol=1e-4)


def test_paraphrases_are_optimised_too_and_batched_still_equals_alone(tiny):
    """Paraphrase-aware targets: an edit's paraphrase rows change its delta (not another edit's),
    a paraphrase without the subject is left out, and batching stays exact."""
    model, tok, adapter = tiny
    hp = _hp()
    tpl = context_templates(model, tok, hp)
    plain = REQS[1]
    para = EditRequest(plain.prompt, plain.subject, plain.target_new,
                       paraphrases=("{}'s capital city is", "The capital of Spain is"))
    assert para.paraphrase_texts == ["France's capital city is"]
    without = compute_targets(model, tok, adapter, [REQS[0], plain], hp, tpl)
    with_para = compute_targets(model, tok, adapter, [REQS[0], para], hp, tpl)
    torch.testing.assert_close(with_para.z[0], without.z[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_para.h, without.h, rtol=1e-5, atol=1e-5)
    assert (with_para.z[1] - without.z[1]).norm() > 1e-3
    alone = compute_targets(model, tok, adapter, [para], hp, tpl)
    torch.testing.assert_close(alone.z[0], with_para.z[1], rtol=1e-4, atol=1e-4)
