"""A lifelong run's state at its latest checkpoint, so a run that was stopped can go on.

A run of 40 batches takes an hour or more on a CPU; a session, a killed process or a device's
time limit can end it first. At every checkpoint the run writes, in `folder`:

    snapshot-b<batch>.safetensors   the edited weights as they are after <batch>
    preserved-b<batch>.safetensors  the earlier batches' keys the solve keeps (PreservedKeys.save)
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
        tensor_file = f"snapshot-b{self.batch}.safetensors"
        with durable_file(folder / tensor_file) as tmp:
            save_file({name: w.detach().to("cpu").contiguous() for name, w in self.weights.items()}, str(tmp))
        keys_file = None
        if self.preserved is not None:  # in the model store's own format (nullspace.py)
            keys_file = f"preserved-b{self.batch}.safetensors"
            self.preserved.save(folder / keys_file)
        index = {"run": run, "batch": self.batch, "tensors": tensor_file, "preserved": keys_file,
                 "checkpoints": self.checkpoints, "batch_s": self.batch_s, "cpu_s": self.cpu_s}
        with durable_file(folder / INDEX) as tmp:
            tmp.write_text(json.dumps(index) + "\n")
        for old in folder.glob("*-b*.safetensors"):  # only the latest is ever needed
            if old.name not in (tensor_file, keys_file):
                old.unlink()

    @classmethod
    def load(cls, folder: Path, run: dict[str, Any]) -> Snapshot | None:
        """The snapshot in `folder` (None if there is none); ConfigError if it is of another run."""
        if not (folder / INDEX).is_file():
            return None
        try:
            index = json.loads((folder / INDEX).read_text())
            weights = load_file(str(folder / index["tensors"]))
            preserved = PreservedKeys.load(folder / index["preserved"]) if index["preserved"] else None
        except Exception as exc:  # OSError, JSON, a missing key, safetensors' own error for a torn file
            raise ConfigError(f"the lifelong snapshot in {folder} is unreadable ({exc}); "
                              "delete the folder and run without --resume") from exc
        if index["run"] != json.loads(json.dumps(run)):
            changed = sorted(k for k in {*index["run"], *run} if index["run"].get(k) != run.get(k))
            raise ConfigError(f"the lifelong snapshot in {folder} is of another run (differs in {', '.join(changed)}); "
                              "run with the same options, or without --resume to start again")
        return cls(index["batch"], index["checkpoints"], index["batch_s"], index["cpu_s"], weights, preserved)
