"""A model version as one GGUF file that llama.cpp and Ollama load.

From a GGUF base (the bundled model is one), the file is the base with only the edited matrices
replaced:
  1) every metadata key of the base, as it was (general.file_type too: most tensors keep it);
  2) every unedited tensor's bytes copied as they are, in the base's quantisation;
  3) each edited matrix (base de-quantised + the delta log, what kbsync verified) at F32, or
     F16 when asked; `benchmarks/serving.py` measures which of the two the verified edits hold at.
From a Hugging Face base, `gguf_convert.py` writes the whole model.
The file is written beside `dest` and renamed into place: a crash leaves no half file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

from kbsync.diskspace import disk_full, is_full
from kbsync.durable import durable_file, follow_umask
from kbsync.errors import StateError
from kbsync.serving.gguf_names import as_linear, gguf_name

Precision = Literal["f32", "f16"]
EDITED_SHARD = "model-edited.safetensors"   # versions/store.py: the tensors a version changes
_NP = {"f32": np.float32, "f16": np.float16}


def edited_tensors(version_dir: Path | None) -> dict[str, torch.Tensor]:
    """The tensors a version changes (HF names, storage layout, fp32); none for the base."""
    if version_dir is None or not (version_dir / EDITED_SHARD).is_file():
        return {}
    return load_file(str(version_dir / EDITED_SHARD))


def export_from_gguf(base: Path, edited: dict[str, torch.Tensor], model_type: str, dest: Path,
                     precision: Precision = "f32") -> dict[str, str]:
    """Write `base` with the `edited` weights replaced; returns {GGUF name: HF name} of those."""
    reader = gguf.GGUFReader(base)
    arch = str(reader.fields["general.architecture"].contents())
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    replaced = {gguf_name(hf, arch, n_blocks): hf for hf in edited}
    present = {t.name: t for t in reader.tensors}
    for name, hf in replaced.items():
        if name not in present:
            raise StateError(f"{base} has no tensor {name} (for {hf}); export onto the GGUF the model was loaded from")
    if not replaced:   # the base model itself: the same bytes
        _copy(base, dest)
        return {}
    try:
        with durable_file(dest) as tmp:
            writer = gguf.GGUFWriter(tmp, arch, endianess=reader.endianess)
            _copy_metadata(reader, writer)
            new: dict[str, np.ndarray] = {}
            for t in reader.tensors:
                if t.name in replaced:
                    matrix = as_linear(edited[replaced[t.name]].float(), model_type).numpy()  # (d_out, d_in)
                    want = tuple(int(n) for n in reversed(t.shape))   # ggml ne reversed: (d_out, d_in)
                    if matrix.shape != want:
                        raise StateError(f"edited {replaced[t.name]} is {matrix.shape} but {t.name} is {want}; "
                                         "export onto the GGUF the model was loaded from")
                    new[t.name] = matrix.astype(_NP[precision])
                    writer.add_tensor_info(t.name, new[t.name].shape, new[t.name].dtype, new[t.name].nbytes)
                else:
                    writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t in reader.tensors:
                writer.write_tensor_data(new[t.name] if t.name in new else t.data,
                                         tensor_endianess=None if t.name in new else reader.endianess)
            writer.close()
    except OSError as exc:
        if is_full(exc):
            raise disk_full(dest.parent, f"writing the GGUF {dest.name}", base.stat().st_size) from None
        raise
    follow_umask(dest)
    return replaced


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key of the base but the header's own and the architecture (the writer adds those)."""
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def _copy(source: Path, dest: Path) -> None:
    with durable_file(dest) as tmp:
        shutil.copyfile(source, tmp)
    follow_umask(dest)


def model_type_of(version_dir: Path | None, fallback_dir: Path) -> str:
    folder = version_dir if version_dir is not None and (version_dir / "config.json").is_file() else fallback_dir
    return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
