"""Bytes on disk per model version (issue 15 #9): the bundled model measured, a 7B layout computed.

    python benchmarks/version_bytes.py [--state-dir DIR]

Measured: the bundled SmolLM2-135M (fp32) in a scratch model store; three versions edit the
default layers 4-8 (as apply does), the third with the first one's weights (a rollback).
A version's own bytes are its files with no other hard link. Before this layout every version
was a full save_pretrained copy. Computed: Llama-2-7B in fp32 from its shapes, editing
down_proj of layers 4-8.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from kbsync.model.loading import load_model
from kbsync.versions.store import ModelStore

MB = 1e6


def own_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.stat().st_nlink == 1)


def all_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def measure(state_dir: Path) -> None:
    loaded = load_model("builtin:smollm2-135m", state_dir=state_dir, device="cpu")
    with tempfile.TemporaryDirectory(dir=state_dir) as scratch:
        store = ModelStore(Path(scratch), loaded)
        params = dict(loaded.model.named_parameters())
        names = [loaded.adapter.weight_name(layer) for layer in (4, 5, 6, 7, 8)]
        rows = []
        for label, scale in (("v1 (layers 4-8 edited)", 1e-4), ("v2 (layers 4-8 edited again)", 2e-4),
                             ("v3 (rollback to v1's weights)", 1e-4)):
            store.materialise([])
            with torch.no_grad():
                for n in names:
                    params[n].add_(scale)
            path = store.write_version(f"v{len(rows) + 1}-{store.weights_sha256()[:12]}")
            rows.append((label, own_bytes(path), all_bytes(path)))
        base = sum(p.stat().st_size for p in store.base_dir.rglob("*") if p.is_file())
        print("bundled SmolLM2-135M, fp32 (measured):")
        print(f"  once per model and edited-layer set, base/: {base / MB:.1f} MB")
        for label, own, full in rows:
            print(f"  {label}: {own / MB:.1f} MB own bytes (a full copy, as before: {full / MB:.1f} MB)")
        print(f"  store on disk (du): {du(Path(scratch)) / MB:.1f} MB for 3 versions "
              f"(before: {3 * rows[0][2] / MB:.1f} MB)")


def du(folder: Path) -> int:
    seen, total = set(), 0
    for p in folder.rglob("*"):
        st = p.lstat()
        if p.is_file() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_size
    return total


def llama2_7b() -> None:
    vocab, d, ff, layers, fp32 = 32000, 4096, 11008, 32, 4
    per_layer = 4 * d * d + 3 * d * ff + 2 * d       # attention q,k,v,o + MLP gate,up,down + 2 norms
    n_params = layers * per_layer + 2 * vocab * d + d  # + embeddings, lm_head (untied), final norm
    full = n_params * fp32
    down = d * ff * fp32
    print("Llama-2-7B, fp32 (computed from the shapes):")
    print(f"  {n_params / 1e9:.2f} B parameters: a full copy is {full / 1e9:.2f} GB")
    print(f"  one down_proj ({d}x{ff}) is {down / MB:.0f} MB; a version editing layers 4-8 costs "
          f"{5 * down / 1e9:.2f} GB ({5 * down / full:.1%} of a full copy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("KBSYNC_TEST_STATE", ".kbsync")))
    args = parser.parse_args()
    llama2_7b()
    measure(args.state_dir)


if __name__ == "__main__":
    main()
