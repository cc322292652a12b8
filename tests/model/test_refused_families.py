"""A family kbsync cannot edit is refused in one line before any slow step: from a GGUF file's
header (before de-quantising) or a HF directory's config.json (before reading weights)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from gguf import GGUFWriter

from kbsync.errors import ModelError
from kbsync.model.gguf_header import gguf_value
from kbsync.model.loading import load_model


def header_only_gguf(path: Path, arch: str) -> Path:
    """A GGUF file with metadata (an array and strings before the architecture) and no tensors."""
    writer = GGUFWriter(str(path), arch)
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_uint32(f"{arch}.block_count", 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_header_reader(tmp_path: Path) -> None:
    path = header_only_gguf(tmp_path / "m.gguf", "gemma3")
    assert gguf_value(path, "general.architecture") == "gemma3"
    assert gguf_value(path, "gemma3.block_count") == 2
    assert gguf_value(path, "no.such.key") is None
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x00")
    with pytest.raises(ModelError, match="damaged GGUF header"):
        gguf_value(tmp_path / "bad.gguf", "general.architecture")


@pytest.mark.parametrize("header", [
    b"GGUF-not-really" * 10,                                  # a key length of exabytes
    b"GGUF\x03\x00\x00\x00" + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
    + (1).to_bytes(8, "little") + b"k" + (8).to_bytes(4, "little") + (2**62).to_bytes(8, "little"),  # a string value's
    b"GGUF\x03\x00\x00\x00" + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
    + (1).to_bytes(8, "little") + b"k" + (9).to_bytes(4, "little") + (4).to_bytes(4, "little")
    + (2**61).to_bytes(8, "little"),                          # an array's count
], ids=["key", "string", "array"])
def test_damaged_lengths_are_a_damaged_header(tmp_path: Path, header: bytes) -> None:
    """A length past the end of the file is damage, not a request for that much memory."""
    (tmp_path / "bad.gguf").write_bytes(header)
    with pytest.raises(ModelError, match="damaged GGUF header"):
        gguf_value(tmp_path / "bad.gguf", "general.architecture")


@pytest.mark.parametrize("arch,match", [
    ("bloom", "cannot edit 'bloom' models exactly: ALiBi"),
    ("qwen2moe", "mixture-of-experts"),
    ("mamba", "state-space"),
    ("t5", "unknown model architecture 't5'; set the \\[model\\] keys"),
])
def test_gguf_refused_from_its_header(tmp_path: Path, arch: str, match: str) -> None:
    path = header_only_gguf(tmp_path / f"{arch}.gguf", arch)
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=match) as info:
        load_model(str(path), state_dir=tmp_path / "state", device="cpu")
    assert time.perf_counter() - t0 < 5 and "\n" not in str(info.value)
    assert not (tmp_path / "state" / "models").exists()  # nothing de-quantised, nothing written


def test_hf_directory_refused_from_its_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mixtral", "num_hidden_layers": 2}))
    with pytest.raises(ModelError, match="mixture-of-experts"):  # there are no weights: refused before them
        load_model(str(tmp_path), state_dir=tmp_path / "state", device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "falcon", "alibi": True}))
    with pytest.raises(ModelError, match="ALiBi"):
        load_model(str(tmp_path), state_dir=tmp_path / "state", device="cpu")


def test_cli_answers_in_one_line(run_cli, tmp_path: Path) -> None:
    path = header_only_gguf(tmp_path / "mpt.gguf", "mpt")
    record = {"case_id": 0, "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                                                  "target_new": {"str": "English"}, "target_true": {"str": "French"}},
              "paraphrase_prompts": ["Danielle Darrieux speaks"], "neighborhood_prompts": ["Michel Rocard speaks"]}
    (tmp_path / "cf.json").write_text(json.dumps([record]))
    t0 = time.perf_counter()
    r = run_cli("eval", "--dataset", str(tmp_path / "cf.json"), env={"KBSYNC_MODEL__PATH": str(path)})
    assert r.exit_code != 0 and time.perf_counter() - t0 < 30
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ModelError: kbsync cannot edit 'mpt' models"), r.err
