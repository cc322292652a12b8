"""The editor as configured: the model ([model]), its hyper-parameters ([editing] over the
family's defaults, `editing.hparams.defaults_for`) and the text corpus of its key statistics.

The one place where settings become editing objects; `versions.context.EditingContext` holds
what they build for one model (with its store of versions).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kbsync.config import Settings
from kbsync.editing.covariance import (
    Corpus,
    HFDatasetCorpus,
    JsonlCorpus,
    ModelSampleCorpus,
    TextFileCorpus,
)
from kbsync.editing.hparams import EditHyperParams, defaults_for
from kbsync.editing.stats_cache import resolve_corpus
from kbsync.errors import ConfigError
from kbsync.logs import get_logger
from kbsync.model.adapters import OVERRIDE_KEYS
from kbsync.model.loading import LoadedModel, load_model

log = get_logger(__name__)


def load_configured_model(settings: Settings, state_dir: Path) -> LoadedModel:
    m = settings.model
    overrides: dict[str, object] = {k: getattr(m, k) for k in OVERRIDE_KEYS if getattr(m, k)}
    return load_model(m.path, state_dir=state_dir, dtype=m.dtype, device=m.device, adapter_overrides=overrides or None)


def hyper_parameters(settings: Settings, loaded: LoadedModel) -> EditHyperParams:
    """The family's defaults, with every non-zero [editing] setting on top."""
    adapter = loaded.adapter
    hp = defaults_for(adapter.family, adapter.n_layers)
    e = settings.editing
    changes: dict[str, object] = {"algorithm": e.algorithm, "merge_same_subject": e.merge_same_subject}
    if e.layers:
        bad = [x for x in e.layers if not 0 <= x < adapter.n_layers]
        if bad:
            raise ConfigError(f"[editing] layers {bad} are not within the model's {adapter.n_layers} layers; "
                              f"use indices 0..{adapter.n_layers - 1}")
        changes["layers"] = tuple(e.layers)
    for key in ("v_steps", "v_lr", "cov_lambda", "cov_samples", "max_batch_tokens", "early_stop_prob",
                "norm_constraint"):
        if getattr(e, key):
            changes[key] = getattr(e, key)
    if e.target_dtype != "auto":
        changes["target_dtype"] = e.target_dtype
    if e.norm_anchor:
        changes["norm_anchor"] = True
    for key in ("n_prefixes", "paraphrase_templates", "edit_memory"):  # -1: the default; 0 is a real choice
        if getattr(e, key) >= 0:
            changes[key] = getattr(e, key)
    return replace(hp, **changes)  # type: ignore[arg-type]


def shipped_text(spec: str) -> Path:
    """Where builtin:NAME's text ships: kbsync/data/NAME.txt (is_file() says whether it does)."""
    from importlib import resources

    return Path(str(resources.files("kbsync").joinpath("data", spec.removeprefix("builtin:") + ".txt")))


def corpus_for(spec: str, loaded: LoadedModel) -> Corpus:
    """[editing] corpus: auto | model-samples | builtin:name | path.txt | path.jsonl | hf:name."""
    spec = resolve_corpus(spec, loaded.spec)
    if spec == "model-samples":
        return ModelSampleCorpus(loaded.model, loaded.tokenizer)
    if spec.startswith("hf:"):
        return HFDatasetCorpus(spec[3:])
    if spec.startswith("builtin:"):  # text shipped in kbsync/data, e.g. builtin:smollm2-samples
        path = shipped_text(spec)
        if not path.is_file():
            shipped = " or ".join(sorted("builtin:" + p.stem for p in path.parent.glob("*-samples.txt")))
            raise ConfigError(f"[editing] corpus {spec!r} is not shipped; use {shipped}, a file or model-samples")
        return TextFileCorpus(path)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"[editing] corpus {spec!r} is no file; give a .txt/.jsonl path, hf:<name> or model-samples")
    return JsonlCorpus(path) if path.suffix == ".jsonl" else TextFileCorpus(path)
