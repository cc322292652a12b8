from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kbsync.errors import ModelError
from kbsync.model.loading import (
    IDENTITY_FILE,
    _remove_stale_temps,
    compute_identity,
    load_model,
    resolve_device,
    resolve_dtype,
)
from kbsync.model.scoring import greedy_answers, target_logprobs


def test_resolve_device_and_dtype() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_dtype("auto", "cpu", torch.bfloat16) == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    assert resolve_dtype("auto", "cuda", torch.float32) == torch.float32
    with pytest.raises(ModelError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


@pytest.fixture
def hf_dir(tmp_path: Path, make_tiny, bpe_tokenizer) -> Path:
    out = tmp_path / "tiny-llama"
    make_tiny("llama", len(bpe_tokenizer), tie=True).save_pretrained(out)
    bpe_tokenizer.save_pretrained(out)
    return out


def test_local_directory(hf_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(str(hf_dir), state_dir=tmp_path / "state", device="cpu")
    assert loaded.source_dir == hf_dir and loaded.spec == str(hf_dir)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.adapter.family == "llama" and loaded.adapter.n_layers == 4
    assert loaded.model.dtype == torch.float32 and loaded.device == torch.device("cpu")
    assert loaded.tokenizer.pad_token is not None
    assert len(loaded.identity) == 64
    cached = json.loads((hf_dir / IDENTITY_FILE).read_text())
    assert cached["identity"] == loaded.identity
    again = load_model(str(hf_dir), state_dir=tmp_path / "state", device="cpu", dtype="bfloat16")
    assert again.identity == loaded.identity and again.model.dtype == torch.bfloat16


def test_identity_follows_the_weights_not_the_sharding(hf_dir: Path, tmp_path: Path, make_tiny,
                                                       bpe_tokenizer) -> None:
    base = compute_identity(hf_dir)
    model = make_tiny("llama", len(bpe_tokenizer), tie=True)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert compute_identity(sharded) == base
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    changed = tmp_path / "changed"
    model.save_pretrained(changed)
    assert compute_identity(changed) != base


def test_identity_cache_is_refreshed_when_weights_change(hf_dir: Path, tmp_path: Path, make_tiny,
                                                        bpe_tokenizer) -> None:
    first = load_model(str(hf_dir), state_dir=tmp_path / "s", device="cpu").identity
    model = make_tiny("llama", len(bpe_tokenizer), tie=True, seed=1)
    model.save_pretrained(hf_dir)
    second = load_model(str(hf_dir), state_dir=tmp_path / "s", device="cpu").identity
    assert second != first
    assert json.loads((hf_dir / IDENTITY_FILE).read_text())["identity"] == second


@pytest.mark.parametrize("spec,match", [
    ("builtin:gpt-5", "unknown builtin model 'gpt-5'"),
    ("/nonexistent/model-dir", "does not exist"),
    ("./missing.gguf", "GGUF file missing.gguf does not exist"),
])
def test_bad_specs(tmp_path: Path, spec: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_model(spec, state_dir=tmp_path)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(str(tmp_path / "empty"), state_dir=tmp_path)


def test_hub_id_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="Hub is not reachable"):
        load_model("HuggingFaceTB/SmolLM2-135M", state_dir=tmp_path)


def test_corrupt_gguf_leaves_no_cache(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="GGUF v0 file"):  # its header is read first (issue 26)
        load_model(str(bad), state_dir=tmp_path / "state")
    assert not (tmp_path / "state" / "models").exists()
    good_header = bad.read_bytes()[:4] + b"\3\0\0\0" + b"\0" * 16  # v3, no tensors, no metadata
    bad.write_bytes(good_header + b"\xff" * 48)
    with pytest.raises(ModelError, match="cannot convert the GGUF file"):
        load_model(str(bad), state_dir=tmp_path / "state")
    assert list((tmp_path / "state" / "models").iterdir()) == []


def test_stale_temp_dirs_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".smollm2-135m.tmp-{dead}-abcd1234"
    live = tmp_path / f".smollm2-135m.tmp-{os.getpid()}-abcd1234"
    for d in (stale, live):
        d.mkdir()
        (d / "config.json").write_text("{}")
    _remove_stale_temps(tmp_path, "smollm2-135m")
    assert not stale.exists() and live.exists()


@pytest.mark.slow
def test_bundled_model_is_cached_as_a_hf_directory(bundled, bundled_state_dir: Path) -> None:
    source = bundled.source_dir
    assert source == bundled_state_dir / "models" / "smollm2-135m"
    config = json.loads((source / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert {"model.safetensors", "tokenizer.json", IDENTITY_FILE} <= {p.name for p in source.iterdir()}
    assert not list(source.parent.glob(".smollm2-135m.tmp-*"))
    assert bundled.adapter.n_layers == 30
    assert bundled.model.lm_head.weight.data_ptr() == bundled.model.model.embed_tokens.weight.data_ptr()

    stamp = (source / "model.safetensors").stat().st_mtime_ns
    again = load_model("builtin:smollm2-135m", state_dir=bundled_state_dir, device="cpu")
    assert (source / "model.safetensors").stat().st_mtime_ns == stamp  # read, not rebuilt
    assert again.identity == bundled.identity == compute_identity(source)
    ids = bundled.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, bundled.model(ids).logits)


@pytest.mark.slow
def test_bundled_model_knows_the_capital_of_france(bundled) -> None:
    answer = greedy_answers(bundled.model, bundled.tokenizer, ["The capital of France is"])[0]
    assert answer.strip().startswith("Paris"), answer
    paris, london = target_logprobs(bundled.model, bundled.tokenizer,
                                    ["The capital of France is"] * 2, ["Paris", "London"]).tolist()
    assert paris > london
