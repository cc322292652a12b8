from __future__ import annotations

import pytest
import torch
from transformers import (
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from kbsync.editing.hparams import defaults_for, scaled_layers
from kbsync.errors import ModelError
from kbsync.model.adapters import adapter_for

VOCAB = 64


def _others() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    small = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4)
    return {
        "mistral": MistralForCausalLM(MistralConfig(**small)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**small)),
        "gptj": GPTJForCausalLM(GPTJConfig(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4,
                                           rotary_dim=4, n_positions=64)),
        "gpt_neox": GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32,
                                                     intermediate_size=64, num_hidden_layers=4,
                                                     num_attention_heads=4)),
    }


def _check_matrix_view(model: torch.nn.Module, adapter, layer: int) -> None:
    """W from as_matrix maps the module's input to its output: y = x Wᵀ + b."""
    module = adapter.module(model, adapter.mlp_out, layer)
    W = adapter.as_matrix(adapter.edit_weight(model, layer))  # (d_out, d_in)
    x = torch.randn(3, W.shape[1])  # (N, d_in)
    bias = module.bias if getattr(module, "bias", None) is not None else 0.0
    torch.testing.assert_close(module(x), x @ W.T + bias)
    assert adapter.from_matrix(W).data_ptr() == adapter.edit_weight(model, layer).data_ptr()
    assert adapter.weight_name(layer) in model.state_dict()


def test_llama_family(make_tiny) -> None:
    model = make_tiny("llama", VOCAB)
    adapter = adapter_for(model)
    assert adapter.family == "llama" and not adapter.conv1d and adapter.n_layers == 4
    assert adapter.mlp_out_name(2) == "model.layers.2.mlp.down_proj"
    assert adapter.weight_name(2) == "model.layers.2.mlp.down_proj.weight"
    assert adapter.as_matrix(adapter.edit_weight(model, 2)).shape == (32, 64)
    assert adapter.module(model, adapter.block, 2) is model.model.layers[2]
    assert adapter.module(model, adapter.final_norm) is model.model.norm
    for layer in range(4):
        _check_matrix_view(model, adapter, layer)


def test_gpt2_conv1d_is_transposed(make_tiny) -> None:
    model = make_tiny("gpt2", VOCAB)
    adapter = adapter_for(model)
    assert adapter.family == "gpt2" and adapter.conv1d
    stored = adapter.edit_weight(model, 1)
    assert stored.shape == (128, 32)  # Conv1D keeps (d_in, d_out)
    assert adapter.as_matrix(stored).shape == (32, 128)
    delta = torch.randn(32, 128)  # (d_out, d_in)
    assert adapter.from_matrix(delta).shape == stored.shape
    assert adapter.module(model, adapter.embed) is model.transformer.wte
    _check_matrix_view(model, adapter, 1)


@pytest.mark.parametrize("model_type,family,mlp_out", [
    ("mistral", "llama", "model.layers.{}.mlp.down_proj"),
    ("qwen2", "llama", "model.layers.{}.mlp.down_proj"),
    ("gptj", "gptj", "transformer.h.{}.mlp.fc_out"),
    ("gpt_neox", "gpt_neox", "gpt_neox.layers.{}.mlp.dense_4h_to_h"),
])
def test_other_families(model_type: str, family: str, mlp_out: str) -> None:
    model = _others()[model_type]
    adapter = adapter_for(model)
    assert (adapter.family, adapter.mlp_out, adapter.conv1d) == (family, mlp_out, False)
    for layer in defaults_for(adapter.family, adapter.n_layers).layers:
        _check_matrix_view(model, adapter, layer)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[-1] == adapter.module(model, adapter.unembed).weight.shape[0]


def test_tied_embeddings(make_tiny) -> None:
    model = make_tiny("llama", VOCAB, tie=True)
    adapter = adapter_for(model)
    unembed = adapter.module(model, adapter.unembed).weight
    embed = adapter.module(model, adapter.embed).weight
    assert unembed.data_ptr() == embed.data_ptr()
    assert adapter.edit_weight(model, 1).data_ptr() != embed.data_ptr()


def test_default_layers_follow_public_configs() -> None:
    assert scaled_layers(32) == (4, 5, 6, 7, 8)
    assert scaled_layers(30) == (4, 5, 6, 7, 8)  # SmolLM2-135M
    assert scaled_layers(48, 13, 17, 48) == (13, 14, 15, 16, 17)
    assert scaled_layers(12, 13, 17, 48) == (3, 4)  # GPT-2 small
    assert scaled_layers(28, 3, 8, 28) == (3, 4, 5, 6, 7, 8)
    assert scaled_layers(44, 6, 10, 44) == (6, 7, 8, 9, 10)
    assert scaled_layers(1, 13, 17, 48) == (0,)
    assert defaults_for("gpt2", 12).layers == (3, 4) and defaults_for("mystery", 4).layers == (0, 1)


def test_overrides(make_tiny) -> None:
    model = make_tiny("llama", VOCAB)
    adapter = adapter_for(model, {"mlp_out": "model.layers.{}.mlp.up_proj"})
    assert adapter.as_matrix(adapter.edit_weight(model, 1)).shape == (64, 32)


def test_unknown_architecture_names_the_keys(make_tiny) -> None:
    model = make_tiny("llama", VOCAB)
    model.config.model_type = "mystery"
    with pytest.raises(ModelError, match="mlp_out"):
        adapter_for(model)
    names = dict(block="model.layers.{}", mlp_out="model.layers.{}.mlp.down_proj",
                 final_norm="model.norm", unembed="lm_head", embed="model.embed_tokens")
    adapter = adapter_for(model, names)
    assert adapter.family == "mystery" and adapter.n_layers == 4


@pytest.mark.parametrize("overrides,match", [
    ({"mlp_out": "model.layers.{}.mlp.nothing"}, "no module 'model.layers.0.mlp.nothing'"),
    ({"layers": [2, 9]}, "unknown model adapter keys"),   # layers are [editing]'s, not the adapter's
    ({"colour": "red"}, "unknown model adapter keys"),
])
def test_bad_overrides(make_tiny, overrides: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        adapter_for(make_tiny("gpt2", VOCAB), overrides)
