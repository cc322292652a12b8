"""The key-statistics cache: which corpus a configuration means, where each C_l is stored, and a
record of what is ready that `kbsync status` reads without loading torch or the model.

A cached C_l is a file keyed by (model identity, layer, corpus identity, samples) (`cache_path`).
Each time the editing context has the C_l of a configuration (computed or read), it writes a
record, keyed by what the user configured ([model] path, [editing] layers, corpus, cov_samples),
naming the files and the resolved values. `ready` answers "is it cached for this configuration?"
from that record and the files it names.

`[editing] corpus = "auto"` (the default) is the shipped sample corpus for the bundled model
and model-written text for any other model (`resolve_corpus`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kbsync.config import Settings
from kbsync.durable import write_text_durably

BUNDLED_MODEL = "builtin:smollm2-135m"
BUNDLED_CORPUS = "builtin:smollm2-samples"  # kbsync/data/smollm2-samples.txt, written by scripts/make_corpus.py
# each builtin model's shipped key-statistics text (kbsync/data/<name>.txt, scripts/make_corpus.py). Gemma 3
# 270M reads SmolLM2's samples: with its own (builtin:gemma3-samples, shipped too) sequential edits wrote a
# larger ΔW and kept fewer known facts (docs/models.md), and its measured figures come from this corpus.
SHIPPED_CORPORA = {BUNDLED_MODEL: BUNDLED_CORPUS, "builtin:gemma3-270m": BUNDLED_CORPUS}
RECORD = "ready.json"


def resolve_corpus(spec: str, model_path: str) -> str:
    """[editing] corpus as used: "auto" is the shipped corpus for a builtin model, else model-samples."""
    if spec != "auto":
        return spec
    return SHIPPED_CORPORA.get(model_path, "model-samples")


def cache_path(cache_dir: Path, model_identity: str, layer: int, corpus_identity: str, n_samples: int) -> Path:
    return Path(cache_dir) / (f"mom2-{model_identity[:16]}-L{layer}-{_sha(corpus_identity)[:16]}"
                              f"-n{n_samples}.safetensors")


def stats_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "cache" / "stats"


def configured(settings: Settings) -> dict[str, Any]:
    """What the user configured that decides the statistics (0 / []: the model's default)."""
    e = settings.editing
    return {"model": settings.model.path, "layers": list(e.layers),
            "corpus": resolve_corpus(e.corpus, settings.model.path), "cov_samples": e.cov_samples}


def record(directory: Path, settings: Settings, **resolved: Any) -> None:
    """Note that the statistics of this configuration are in `resolved["files"]` (names in `directory`)."""
    path = Path(directory) / RECORD
    entries = _read(path)
    entries[_key(settings)] = {**configured(settings), **resolved}
    write_text_durably(path, json.dumps(entries, indent=1, sort_keys=True))


def ready(settings: Settings, state_dir: Path) -> dict[str, Any]:
    """{cached, corpus, layers, n_samples, model_identity}: cached is True when the statistics of the
    configured model, layers, corpus and samples were made and every file is still there."""
    directory = stats_dir(state_dir)
    entry = _read(directory / RECORD).get(_key(settings))
    out: dict[str, Any] = {"cached": False, "corpus": configured(settings)["corpus"], "layers": None,
                           "n_samples": None, "model_identity": None}
    if entry is None:
        return out
    files = entry.get("files") or []
    out.update({k: entry.get(k) for k in ("layers", "n_samples", "model_identity")})
    out["cached"] = bool(files) and all((directory / f).is_file() for f in files)
    return out


def _key(settings: Settings) -> str:
    return json.dumps(configured(settings), sort_keys=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()
