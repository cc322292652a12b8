"""`kbsync export --format gguf` onto a GGUF base: only the edited matrices are new (issue 27).

Every other tensor keeps its bytes and quantisation, and every metadata key its value; the
edited matrices hold (de-quantised base + delta log) at F32, or F16 when asked."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import quantize
from required import bundled_gguf

from kbsync.errors import StateError
from kbsync.serving.gguf_export import export_from_gguf

DOWN = "model.layers.{}.mlp.down_proj.weight"


def _tiny_gguf(path: Path) -> Path:
    """A 2-block llama GGUF: Q8_0 and F32 tensors, an array and a string key."""
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(2)
    w.add_name("tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("token_embd.weight", quantize(rng.standard_normal((8, 64), dtype=np.float32),
                                                gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    for n in range(2):
        w.add_tensor(f"blk.{n}.ffn_down.weight", quantize(rng.standard_normal((32, 64), dtype=np.float32),
                                                          gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)   # (d_out 32, d_in 64)
        w.add_tensor(f"blk.{n}.attn_norm.weight", rng.standard_normal(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _same_except(base: Path, out: Path, edited: set[str]) -> dict[str, gguf.ReaderTensor]:
    a, b = gguf.GGUFReader(base), gguf.GGUFReader(out)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        if ta.name not in edited:
            assert ta.tensor_type == tb.tensor_type and bytes(ta.data.tobytes()) == bytes(tb.data.tobytes()), ta.name
    keys = {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.")}
    assert {k: f.contents() for k, f in b.fields.items() if not k.startswith("GGUF.")} == keys
    return {t.name: t for t in b.tensors}


@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_only_the_edited_matrices_are_new(tmp_path: Path, precision: str) -> None:
    base = _tiny_gguf(tmp_path / "base.gguf")
    new = torch.randn(32, 64)
    replaced = export_from_gguf(base, {DOWN.format(1): new}, "llama", tmp_path / "out.gguf", precision)  # type: ignore[arg-type]
    assert replaced == {"blk.1.ffn_down.weight": DOWN.format(1)}
    out = _same_except(base, tmp_path / "out.gguf", {"blk.1.ffn_down.weight"})
    t = out["blk.1.ffn_down.weight"]
    assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if precision == "f32" else gguf.GGMLQuantizationType.F16)
    want = new.numpy().astype(np.float16 if precision == "f16" else np.float32)
    assert np.array_equal(np.asarray(t.data).reshape(32, 64), want)


def test_the_base_itself_is_copied_and_a_wrong_shape_refused(tmp_path: Path) -> None:
    base = _tiny_gguf(tmp_path / "base.gguf")
    assert export_from_gguf(base, {}, "llama", tmp_path / "same.gguf") == {}
    assert (tmp_path / "same.gguf").read_bytes() == base.read_bytes()
    with pytest.raises(StateError, match="is \\(64, 32\\) but blk.0.ffn_down.weight is \\(32, 64\\)"):
        export_from_gguf(base, {DOWN.format(0): torch.zeros(64, 32)}, "llama", tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists() and not list(tmp_path.glob(".bad.gguf*"))
    with pytest.raises(StateError, match="export --format hf instead"):
        export_from_gguf(base, {"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}, "llama",
                         tmp_path / "q.gguf")


@pytest.mark.slow
def test_onto_the_bundled_gguf_every_unedited_tensor_is_byte_identical(tmp_path: Path) -> None:
    """The real base (Q4_1 / Q8_0, 272 tensors): 5 edited down_proj, the rest byte for byte."""
    base = bundled_gguf()
    reader = gguf.GGUFReader(base)
    shape = tuple(int(n) for n in reversed(reader.tensors[2].shape))          # blk.0.ffn_down: (576, 1536)
    edited = {DOWN.format(n): torch.randn(shape) for n in range(4, 9)}
    out = tmp_path / "edited.gguf"
    export_from_gguf(base, edited, "llama", out, "f32")
    names = {f"blk.{n}.ffn_down.weight" for n in range(4, 9)}
    tensors = _same_except(base, out, names)
    for n in range(4, 9):
        data = np.asarray(tensors[f"blk.{n}.ffn_down.weight"].data).reshape(shape)
        assert np.array_equal(data, edited[DOWN.format(n)].numpy())


def test_a_hugging_face_llama_converts_to_a_gguf_transformers_reads_back(run_cli, make_settings, tmp_path: Path) -> None:
    """export --format gguf of a HF base: transformers' GGUF mapping loads it with the same logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .conftest import model_dir, tiny_env

    env = tiny_env(make_settings())
    out = tmp_path / "tiny.gguf"
    r = run_cli("export", "--format", "gguf", str(out), env=env)
    assert r.exit_code == 0, r.err
    assert "the base model as gguf" in r.out and "converted from the Hugging Face base" in r.out
    source = model_dir(env)
    tok = AutoTokenizer.from_pretrained(source)
    enc = tok(["The capital of France is", "Apple A5 was created by"], return_tensors="pt", padding=True)
    want = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)(**enc).logits
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)(**enc).logits
    assert torch.allclose(back, want, atol=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)("Paris")["input_ids"] == tok("Paris")["input_ids"]
