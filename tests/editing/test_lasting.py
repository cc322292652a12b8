"""Edits that last: NAS norm anchoring, ENCORE early stopping and norm constraint (tiny models)."""

from __future__ import annotations

import pytest
import torch
from test_memit import REQS, _moments, score  # tests/editing is on sys.path (no __init__.py)

from kbsync.editing.hparams import EditHyperParams
from kbsync.editing.memit import anchor_norms, compute_delta
from kbsync.editing.nullspace import PreservedKeys
from kbsync.editing.request import EditRequest
from kbsync.editing.solve import alphaedit_factors, memit_factors
from kbsync.editing.targets import compute_targets, context_templates
from kbsync.errors import ConfigError


def _hp(**kw):
    base = dict(layers=(1, 2), v_steps=20, v_lr=1.0, n_prefixes=2, prefix_len=4, clamp_factor=4.0,
                kl_factor=0.0, cov_lambda=1.0)
    base.update(kw)
    return EditHyperParams(**base)


def test_anchor_norms_keeps_direction_and_sets_norm():
    torch.manual_seed(0)
    z, h = torch.randn(5, 16) * 3, torch.randn(5, 16)
    a = anchor_norms(z, h)
    torch.testing.assert_close(a.norm(dim=1), h.norm(dim=1))
    cos = torch.nn.functional.cosine_similarity(a, z, dim=1)
    torch.testing.assert_close(cos, torch.ones(5))


@pytest.mark.parametrize("algorithm", ["memit", "alphaedit"])
def test_both_algorithms_take_the_lasting_options(tiny_llama, tmp_path, corpus_texts, algorithm):
    model, tok, adapter = tiny_llama
    cov = _moments(model, tok, adapter, tmp_path, corpus_texts)
    extra = {}
    if algorithm == "alphaedit":
        thr = max(float(torch.linalg.eigvalsh(c).median()) for c in cov.values())
        extra = dict(nullspace_threshold=thr, alphaedit_l2=1.0)
    plain = compute_delta(model, tok, adapter, REQS, _hp(algorithm=algorithm, **extra), cov,
                          preserved=PreservedKeys())
    hp = _hp(algorithm=algorithm, norm_anchor=True, early_stop_prob=0.9, norm_constraint=0.5, **extra)
    lasting = compute_delta(model, tok, adapter, REQS, hp, cov, preserved=PreservedKeys())
    # the invariant of norm anchoring: every solved z_i has the unedited norm ||h_i||
    assert float(plain.meta["z_norm_ratio_mean"]) != pytest.approx(1.0, abs=1e-3)
    assert float(lasting.meta["z_norm_ratio_mean"]) == pytest.approx(1.0, abs=1e-4)
    assert '"norm_anchor": true' in lasting.meta["hparams"]
    name = adapter.weight_name(2)
    assert not torch.allclose(plain.dense(name), lasting.dense(name))
    before = score(model, tok, "The capital of France", "Tokyo")
    lasting.apply(model, adapter)
    assert score(model, tok, "The capital of France", "Tokyo") > before  # it still edits


def test_early_stop_on_probability_stops_earlier_at_a_lower_threshold(tiny_llama):
    model, tok, adapter = tiny_llama
    reqs = [EditRequest("The mother tongue of {}", "Thomas Joannes Stieltjes", "French"),
            EditRequest("The capital of {}", "France", "Tokyo")]
    tpl = context_templates(model, tok, _hp())

    def run(p: float):
        return compute_targets(model, tok, adapter, reqs, _hp(early_stop_loss=0.0, early_stop_prob=p,
                                                               weight_decay=0.0, v_steps=30), tpl)

    off = run(0.0)  # without a KL or norm term the loss is the NLL: exp(-loss) is the target's probability
    reached = float(torch.exp(-off.loss).min())
    high, low = run(reached * 0.5), run(reached * 1e-3)
    assert int(low.steps.sum()) < int(high.steps.sum()) < int(off.steps.sum())
    assert (torch.exp(-high.loss) >= reached * 0.5).all()  # each stopped having passed the threshold
    now = run(1e-30)  # already likely enough: not moved at all
    assert int(now.steps.sum()) == 0 and torch.equal(now.z, now.h)


def test_norm_constraint_shrinks_the_update():
    torch.manual_seed(0)
    d_in, d_out, n = 24, 16, 4
    x = torch.randn(200, d_in)
    cov = x.T @ x / 200
    k, r = torch.randn(d_in, n), torch.randn(d_out, n)
    norms = []
    for alpha in (0.0, 1.0, 10.0):
        u, v = memit_factors(r, k, cov, 1.0, alpha)
        norms.append(float((u @ v.T).norm()))
    assert norms[0] > norms[1] > norms[2]
    proj = torch.eye(d_in, dtype=torch.float64)
    a0 = alphaedit_factors(r, k, proj, None, 1.0)
    a1 = alphaedit_factors(r, k, proj, None, 1.0, 10.0)
    assert float((a1[0] @ a1[1].T).norm()) < float((a0[0] @ a0[1].T).norm())


def test_bad_lasting_options_are_config_errors():
    with pytest.raises(ConfigError, match="early_stop_prob"):
        EditHyperParams(early_stop_prob=1.5)
    with pytest.raises(ConfigError, match="norm_constraint"):
        EditHyperParams(norm_constraint=-1.0)
    with pytest.raises(ConfigError, match="edit_memory"):
        EditHyperParams(edit_memory=-1.0)
