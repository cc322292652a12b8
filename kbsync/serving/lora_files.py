"""LoRA modules (serving/lora.py) as files engines load.

    write_peft(modules, folder, base)      a PEFT adapter in `folder` (vLLM, transformers + peft):
        adapter_config.json                r = alpha = the (padded) rank: scaling 1, dW = B A
        adapter_model.safetensors          base_model.model.<module>.lora_A.weight (r, d_in)
                                           base_model.model.<module>.lora_B.weight (d_out, r)
    write_gguf_lora(modules, dest, arch, n_blocks)   a llama.cpp LoRA (llama-server --lora FILE):
        general.type = adapter, adapter.type = lora, adapter.lora.alpha = r
        blk.N.ffn_down.weight.lora_a (ne [d_in, r]), .lora_b (ne [r, d_out]), F32

serving/exports.py writes them into a temporary directory and renames it into place.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.torch import save_file

from kbsync.durable import durable_file, follow_umask
from kbsync.serving.gguf_names import gguf_name
from kbsync.serving.lora import LoraModule, padded

PEFT_PREFIX = "base_model.model."


def write_peft(modules: list[LoraModule], folder: Path, base: str, fan_in_fan_out: bool = False) -> int:
    """adapter_config.json and adapter_model.safetensors in `folder`; returns the rank."""
    r, mods = padded(modules)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
        "r": r, "lora_alpha": r, "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
        "fan_in_fan_out": fan_in_fan_out, "target_modules": sorted(m.module for m in mods),
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
    }
    tensors = {}
    for m in mods:
        tensors[f"{PEFT_PREFIX}{m.module}.lora_A.weight"] = m.a.contiguous()   # (r, d_in)
        tensors[f"{PEFT_PREFIX}{m.module}.lora_B.weight"] = m.b.contiguous()   # (d_out, r)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1) + "\n")
    return r


def write_gguf_lora(modules: list[LoraModule], dest: Path, arch: str, n_blocks: int) -> int:
    """The llama.cpp LoRA file at `dest`; returns its rank."""
    r, mods = padded(modules)
    with durable_file(dest) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(r))
        for m in mods:
            name = gguf_name(m.module + ".weight", arch, n_blocks)
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(m.a.numpy(), dtype=np.float32))  # (r, d_in)
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(m.b.numpy(), dtype=np.float32))  # (d_out, r)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    follow_umask(dest)
    return r
