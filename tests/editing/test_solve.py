from __future__ import annotations

import torch

from kbsync.editing.nullspace import PreservedKeys, nullspace_projection
from kbsync.editing.solve import alphaedit_factors, memit_factors


def test_memit_solve_hits_the_values_as_lambda_goes_to_zero():
    g = torch.Generator().manual_seed(0)
    d_in, d_out, n = 24, 16, 5
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    k = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    v = torch.randn(d_out, n, generator=g, dtype=torch.float64)  # wanted W' k_i = v_i
    c = torch.eye(d_in, dtype=torch.float64)
    u, vv = memit_factors(v - w @ k, k, c, lam=1e-8)
    torch.testing.assert_close((w + u @ vv.T) @ k, v, rtol=1e-5, atol=1e-5)
    # a large lambda keeps the update small
    u2, v2 = memit_factors(v - w @ k, k, c, lam=1e6)
    assert (u2 @ v2.T).norm() < 1e-3 * (u @ vv.T).norm()


def test_alphaedit_update_leaves_preserved_keys_alone():
    g = torch.Generator().manual_seed(1)
    d_in, d_out, n = 32, 16, 4
    k0 = torch.randn(d_in, 20, generator=g, dtype=torch.float64)  # knowledge to keep, rank 20 < 32
    cov = k0 @ k0.T / k0.shape[1]
    proj = nullspace_projection(cov, threshold=1e-8)
    assert torch.linalg.matrix_rank(proj) == d_in - 20
    k = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    r = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    earlier = PreservedKeys()
    earlier.add(3, torch.randn(d_in, 6, generator=g))
    u, v = alphaedit_factors(r, k, proj, earlier.get(3), l2=1.0)
    dw = u @ v.T  # (d_out, d_in)
    assert (dw @ k0).abs().max() < 1e-8 * dw.abs().max() * k0.abs().max() * d_in
    assert (dw @ k).norm() > 0.1 * r.norm()  # and it still moves the new keys


def test_preserved_keys_round_trip(tmp_path):
    pk = PreservedKeys()
    pk.add(4, torch.randn(8, 3))
    pk.add(4, torch.randn(8, 2))
    pk.save(tmp_path / "pk.safetensors")
    back = PreservedKeys.load(tmp_path / "pk.safetensors")
    assert torch.equal(back.kkt[4], pk.kkt[4]) and back.n_keys == {4: 5}


def test_memit_edit_memory_keeps_earlier_keys_as_their_weight_grows():
    g = torch.Generator().manual_seed(2)
    d_in, d_out, n = 24, 16, 4
    k = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    r = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    kp = torch.randn(d_in, 6, generator=g, dtype=torch.float64)  # an earlier batch's keys
    c = torch.eye(d_in, dtype=torch.float64)
    moved = []
    for mu in (0.0, 1.0, 1e4):
        earlier = PreservedKeys()
        earlier.add(5, kp, weight=mu)
        u, v = memit_factors(r, k, c, lam=0.1, preserved_kkt=earlier.get(5) if mu else None)
        moved.append(float((u @ v.T @ kp).norm()))
        assert (u @ v.T @ k).norm() > 0.1 * r.norm()  # the new keys still move
    assert moved[0] > moved[1] > 100 * moved[2]


def test_preserved_keys_are_weighted_and_summed():
    a, b = torch.randn(8, 3), torch.randn(8, 2)
    pa, pb = PreservedKeys(), PreservedKeys()
    pa.add(4, a, weight=2.0)
    pb.add(4, b)
    pb.add(5, b)
    both = pa.plus(pb)
    a64, b64 = a.double(), b.double()
    torch.testing.assert_close(both.kkt[4], 2 * a64 @ a64.T + b64 @ b64.T)
    torch.testing.assert_close(both.kkt[5], b64 @ b64.T)
    assert both.n_keys == {4: 5, 5: 2} and pa.n_keys == {4: 3}  # neither operand changed


def test_the_solve_keeps_earlier_batches_by_algorithm_and_edit_memory():
    from types import SimpleNamespace

    from kbsync.editing.hparams import EditHyperParams

    k = torch.randn(8, 3)
    deltas = [SimpleNamespace(keys={4: k})]
    assert PreservedKeys.kept_by(EditHyperParams(algorithm="memit", edit_memory=0.0), deltas) is None  # plain MEMIT
    memory = PreservedKeys.kept_by(EditHyperParams(algorithm="memit", edit_memory=2.0), deltas)
    alpha = PreservedKeys.kept_by(EditHyperParams(algorithm="alphaedit", edit_memory=2.0), deltas)
    assert memory is not None and alpha is not None
    torch.testing.assert_close(memory.kkt[4], 2 * alpha.kkt[4])  # AlphaEdit keeps them at weight 1
