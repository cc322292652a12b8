"""A lifelong run's state at its latest checkpoint, so a run that was stopped can go on.

A run of 40 batches takes an hour or more on a CPU; a session, a killed process or a device's
time limit can end it first. At every checkpoint the run writes, in `folder`:

    snapshot-b<batch>.safetensors   the edited weights as they are after <batch> (w::<name>) and the
                                    earlier batches' keys the solve keeps (kkt::<layer>, f64)
    snapshot.json                   the run it belongs to (`run`), <batch>, the checkpoint rows and
                                    the per-batch seconds so far; written last, so it only ever
                                    names a complete tensor file

Going on from it (`resume`) puts those weights and keys back and starts at batch <batch> + 1: the
solves are deterministic (seeded prefixes), so the curve is the one an unbroken run draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kbsync.durable import durable_file
from kbsync.editing.nullspace import PreservedKeys
from kbsync.errors import ConfigError

INDEX = "snapshot.json"


@dataclass
class Snapshot:
    batch: int  # batches done
    checkpoints: list[dict[str, Any]]
    batch_s: list[float]
    cpu_s: list[float]
    weights: dict[str, torch.Tensor]  # edited weight name -> its value after `batch`
    preserved: PreservedKeys | None  # what the next solve keeps of the earlier batches

    def save(self, folder: Path, run: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"w::{name}": w.detach().to("cpu").contiguous() for name, w in self.weights.items()}
        if self.preserved is not None:
            tensors.update({f"kkt::{layer}": k.contiguous() for layer, k in self.preserved.kkt.items()})
        tensor_file = f"snapshot-b{self.batch}.safetensors"
        keys = {str(layer): n for layer, n in self.preserved.n_keys.items()} if self.preserved is not None else None
        with durable_file(folder / tensor_file) as tmp:
            save_file(tensors, str(tmp))
        index = {"run": run, "batch": self.batch, "tensors": tensor_file, "n_keys": keys,
                 "checkpoints": self.checkpoints, "batch_s": self.batch_s, "cpu_s": self.cpu_s}
        with durable_file(folder / INDEX) as tmp:
            tmp.write_text(json.dumps(index) + "\n")
        for old in folder.glob("snapshot-b*.safetensors"):  # only the latest is ever needed
            if old.name != tensor_file:
                old.unlink()

    @classmethod
    def load(cls, folder: Path, run: dict[str, Any]) -> Snapshot | None:
        """The snapshot in `folder` (None if there is none); ConfigError if it is of another run."""
        if not (folder / INDEX).is_file():
            return None
        try:
            index = json.loads((folder / INDEX).read_text())
            tensors = load_file(str(folder / index["tensors"]))
        except Exception as exc:  # OSError, JSON, a missing key, safetensors' own error for a torn file
            raise ConfigError(f"the lifelong snapshot in {folder} is unreadable ({exc}); "
                              "delete the folder and run without --resume") from exc
        if index["run"] != json.loads(json.dumps(run)):
            changed = sorted(k for k in {*index["run"], *run} if index["run"].get(k) != run.get(k))
            raise ConfigError(f"the lifelong snapshot in {folder} is of another run (differs in {', '.join(changed)}); "
                              "run with the same options, or without --resume to start again")
        preserved = None
        if index["n_keys"] is not None:
            preserved = PreservedKeys({int(k.split("::")[1]): t for k, t in tensors.items() if k.startswith("kkt::")},
                                      {int(layer): n for layer, n in index["n_keys"].items()})
        weights = {k.split("::", 1)[1]: t for k, t in tensors.items() if k.startswith("w::")}
        return cls(index["batch"], index["checkpoints"], index["batch_s"], index["cpu_s"], weights, preserved)
