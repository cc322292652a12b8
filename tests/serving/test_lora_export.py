"""`kbsync export --format lora`: the delta log as a PEFT adapter, exact (issue 27).

The adapter applied to the base in plain transformers + peft must give the merged version's
logits to float precision after 3 batches; its GGUF twin holds the same factors."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kbsync.editing.delta import Delta
from kbsync.serving.lora import lora_modules, padded

from .conftest import model_dir

PROMPTS = ["The capital of France is", "Danielle Darrieux speaks", "The capital of Italy is Rome and",
           "Apple A5 was created by"]


def _logits(model, tokenizer) -> torch.Tensor:
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits.float()     # (B, T, V)


def test_lora_export_after_three_batches(run_cli, three_batches, tmp_path: Path) -> None:
    """One apply of 3 batches (the costly part), three exports read from it."""
    lora = tmp_path / "lora"
    r = run_cli("export", "--format", "lora", str(lora), env=three_batches)
    assert r.exit_code == 0, r.err
    assert "rank 6 on 2 modules, exact" in r.out          # 3 batches of 2 edits, layers 1 and 2
    peft_equals_merged(run_cli, three_batches, lora, tmp_path / "merged")
    gguf_lora_holds_the_same_factors(lora)
    compressed_past_max_rank_states_its_error(run_cli, three_batches, tmp_path / "small")
    refused = run_cli("export", "--format", "lora", str(lora), env=three_batches)
    assert refused.exit_code == 3 and "not empty" in refused.err


def test_lora_export_of_the_base_is_refused(run_cli, make_settings, tmp_path: Path) -> None:
    from .conftest import tiny_env

    r = run_cli("export", "--format", "lora", str(tmp_path / "lora"), env=tiny_env(make_settings()))
    assert r.exit_code == 8 and "VersionError: the base model has no edits" in r.err
    assert not (tmp_path / "lora").exists()


def peft_equals_merged(run_cli, env: dict[str, str], lora: Path, merged: Path) -> None:
    """The PEFT adapter on the base in plain transformers + peft = the merged version."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert run_cli("export", str(merged), env=env).exit_code == 0

    config = json.loads((lora / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 6
    assert sorted(config["target_modules"]) == ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]

    tokenizer = AutoTokenizer.from_pretrained(model_dir(env))
    base = AutoModelForCausalLM.from_pretrained(model_dir(env), dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(lora)).eval()
    with_adapter = _logits(adapted, tokenizer)
    version = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    want = _logits(version, tokenizer)
    base_logits = _logits(adapted.get_base_model().__class__.from_pretrained(model_dir(env)), tokenizer)
    assert (want - base_logits).abs().max() > 1e-2           # the edits do change the logits
    # the weights: merged = base + B A, to the fp32 roundings of the 3 batches' sums
    merged_w = dict(version.named_parameters())
    lora_w = load_file(str(lora / "adapter_model.safetensors"))
    for module in config["target_modules"]:
        a = lora_w[f"base_model.model.{module}.lora_A.weight"].double()
        b = lora_w[f"base_model.model.{module}.lora_B.weight"].double()
        w0 = dict(base.named_parameters())[f"{module}.base_layer.weight"].double()
        w = merged_w[f"{module}.weight"].double()
        assert (w - (w0 + b @ a)).abs().max() <= 3 * torch.finfo(torch.float32).eps * w.abs().max()
    # the logits, to float precision: on this random model (lambda = 1) dW is ~250x W, so the fp32
    # sums of x W and x dW cancel: ~1e-5 of the logits' scale, where the bundled model gives ~1e-6
    scale = want.abs().max()
    assert (with_adapter - want).abs().max() <= 1e-4 * scale, (with_adapter - want).abs().max() / scale


def gguf_lora_holds_the_same_factors(lora: Path) -> None:
    peft = load_file(str(lora / "adapter_model.safetensors"))
    reader = gguf.GGUFReader(lora / "adapter.gguf")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(6.0)
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert sorted(tensors) == [f"blk.{n}.ffn_down.weight.lora_{ab}" for n in (1, 2) for ab in "ab"]
    for n in (1, 2):
        a = peft[f"base_model.model.model.layers.{n}.mlp.down_proj.lora_A.weight"].numpy()   # (r, d_in)
        b = peft[f"base_model.model.model.layers.{n}.mlp.down_proj.lora_B.weight"].numpy()   # (d_out, r)
        assert np.array_equal(tensors[f"blk.{n}.ffn_down.weight.lora_a"], a)
        assert np.array_equal(tensors[f"blk.{n}.ffn_down.weight.lora_b"], b)
        assert [int(x) for x in reader.tensors[0].shape] and a.shape == (6, 64) and b.shape == (32, 6)


def compressed_past_max_rank_states_its_error(run_cli, env: dict[str, str], dest: Path) -> None:
    r = run_cli("export", "--format", "lora", "--max-rank", "3", str(dest), env=env)
    assert r.exit_code == 0, r.err
    assert "rank 3 on 2 modules, compressed: relative error at most" in r.out
    assert json.loads((dest / "adapter_config.json").read_text())["r"] == 3


def test_compression_error_is_the_stated_bound() -> None:
    torch.manual_seed(0)
    u, v = torch.randn(32, 8), torch.randn(64, 8)                     # dW = U V^T, rank 8
    delta = Delta.from_factors({"model.layers.1.mlp.down_proj.weight": (u, v)})
    exact, = lora_modules(delta)
    assert exact.rank == 8 and exact.rel_error == 0.0
    assert torch.allclose(exact.b @ exact.a, u @ v.T, atol=1e-5)
    cut, = lora_modules(delta, max_rank=5)
    dw = (u @ v.T).double()
    actual = float(torch.linalg.norm(dw - (cut.b @ cut.a).double()) / torch.linalg.norm(dw))
    assert cut.rank == 5 and cut.full_rank == 8
    assert actual == pytest.approx(cut.rel_error, rel=1e-4) and 0 < cut.rel_error < 1
    s = torch.linalg.svdvals(dw)                                      # Eckart-Young: the best rank-5
    assert cut.rel_error == pytest.approx(float((s[5:] ** 2).sum().sqrt() / (s ** 2).sum().sqrt()), rel=1e-6)


def test_dense_updates_and_padding_stay_exact() -> None:
    torch.manual_seed(1)
    dense = torch.randn(6, 4) @ torch.randn(4, 5)                   # rank 4, stored dense
    small = (torch.randn(6, 2), torch.randn(5, 2))
    delta = Delta(dense_updates={"a.weight": dense})
    delta.factors["b.weight"] = small
    r, mods = padded(lora_modules(delta))
    assert r == 4 and [m.rank for m in mods] == [4, 4]
    by = {m.module: m for m in mods}
    assert torch.allclose(by["a"].b @ by["a"].a, dense, atol=1e-5)
    assert torch.allclose(by["b"].b @ by["b"].a, small[0] @ small[1].T, atol=1e-6)
