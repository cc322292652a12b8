from __future__ import annotations

import pytest
import torch

from kbsync.errors import ModelError
from kbsync.model.adapters import adapter_for
from kbsync.model.hooks import StopForward, Trace, TraceDict

IDS = torch.tensor([[5, 9, 17, 33, 2], [7, 7, 40, 3, 11]])  # (B=2, T=5)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_trace_retains_input_and_output(make_tiny, family: str) -> None:
    model = make_tiny(family, 64)
    adapter = adapter_for(model)
    name = adapter.mlp_out_name(2)
    with Trace(model, name, retain_input=True) as t:
        model(IDS)
    W = adapter.as_matrix(adapter.edit_weight(model, 2))  # (d_out, d_in)
    assert t.input.shape == (2, 5, W.shape[1])
    module = adapter.module(model, adapter.mlp_out, 2)
    torch.testing.assert_close(t.output, module(t.input))
    assert _hook_count(model) == 0


def test_edit_output_changes_the_model_only_inside(make_tiny) -> None:
    model = make_tiny("llama", 64)
    name = adapter_for(model).mlp_out_name(1)
    before = model(IDS).logits
    seen = []

    def shift(output: torch.Tensor, layer: str) -> torch.Tensor:
        seen.append(layer)
        return output + 1.0

    with Trace(model, name, edit_output=shift) as t:
        edited = model(IDS).logits
    assert seen == [name]
    assert not torch.allclose(before, edited)
    assert t.output.shape == (2, 5, 32)
    torch.testing.assert_close(model(IDS).logits, before)


def test_stop_ends_the_forward_pass(make_tiny) -> None:
    model = make_tiny("llama", 64)
    adapter = adapter_for(model)
    reached_end = False
    with Trace(model, adapter.block.format(3)) as last:
        with Trace(model, adapter.mlp_out_name(0), stop=True) as t:
            model(IDS)
            reached_end = True
    assert not reached_end
    assert t.output is not None and last.output is None
    assert _hook_count(model) == 0


def test_hooks_are_removed_after_an_error(make_tiny) -> None:
    model = make_tiny("gpt2", 64)
    names = [adapter_for(model).mlp_out_name(i) for i in range(4)]
    with pytest.raises(ValueError):
        with TraceDict(model, names, retain_input=True):
            assert _hook_count(model) == 4
            raise ValueError("boom")
    assert _hook_count(model) == 0


def test_tracedict_stops_once_every_module_ran(make_tiny) -> None:
    model = make_tiny("llama", 64)
    adapter = adapter_for(model)
    names = [adapter.mlp_out_name(2), adapter.mlp_out_name(0)]  # listed out of order
    shapes = []
    with Trace(model, adapter.block.format(3)) as after:
        with TraceDict(model, names, retain_input=True, stop=True) as td:
            for batch in (IDS, IDS[:1]):  # a second pass stops too, and refreshes what is kept
                with pytest.raises(StopForward):
                    model(batch)
                shapes.append([tuple(td[n].input.shape) for n in names])
    assert list(td) == names
    assert shapes == [[(2, 5, 64)] * 2, [(1, 5, 64)] * 2]
    assert after.output is None


def test_gradients_flow_unless_detached(make_tiny) -> None:
    model = make_tiny("llama", 64)
    name = adapter_for(model).mlp_out_name(1)
    for p in model.parameters():
        p.requires_grad_(False)
    delta = torch.zeros(32, requires_grad=True)
    with Trace(model, name, edit_output=lambda out, _: out + delta) as t:
        model(IDS).logits.sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert t.output.requires_grad
    with Trace(model, name, detach=True, clone=True) as t:
        model(IDS)
    assert not t.output.requires_grad


def test_unknown_module_is_a_model_error(make_tiny) -> None:
    model = make_tiny("llama", 64)
    with pytest.raises(ModelError, match="no module 'model.layers.9.mlp'"):
        TraceDict(model, ["model.layers.0.mlp", "model.layers.9.mlp"])
    assert _hook_count(model) == 0
