"""Everything `apply`, `rollback` and `verify` need to edit one model, built from settings:
the loaded base model, the hyper-parameters, the key statistics C_l and the model store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from kbsync.config import Settings
from kbsync.editing import stats_cache
from kbsync.editing.covariance import (
    Corpus,
    HFDatasetCorpus,
    JsonlCorpus,
    ModelSampleCorpus,
    PassClock,
    TextFileCorpus,
    cache_path,
    samples_for,
    second_moments,
)
from kbsync.editing.hparams import EditHyperParams, defaults_for
from kbsync.editing.stats_cache import resolve_corpus
from kbsync.errors import ConfigError
from kbsync.logs import get_logger
from kbsync.model.adapters import OVERRIDE_KEYS
from kbsync.model.loading import LoadedModel, load_model
from kbsync.versions.store import ModelStore

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
                "norm_constraint", "edit_memory"):
        if getattr(e, key):
            changes[key] = getattr(e, key)
    if e.target_dtype != "auto":
        changes["target_dtype"] = e.target_dtype
    if e.norm_anchor:
        changes["norm_anchor"] = True
    for key in ("n_prefixes", "paraphrase_templates"):  # -1: the family default; 0 is a real choice
        if getattr(e, key) >= 0:
            changes[key] = getattr(e, key)
    return replace(hp, **changes)  # type: ignore[arg-type]


def corpus_for(spec: str, loaded: LoadedModel) -> Corpus:
    """[editing] corpus: auto | model-samples | builtin:name | path.txt | path.jsonl | hf:name."""
    spec = resolve_corpus(spec, loaded.spec)
    if spec == "model-samples":
        return ModelSampleCorpus(loaded.model, loaded.tokenizer)
    if spec.startswith("hf:"):
        return HFDatasetCorpus(spec[3:])
    if spec.startswith("builtin:"):  # text shipped in kbsync/data, e.g. builtin:smollm2-samples
        from importlib import resources

        path = Path(str(resources.files("kbsync").joinpath("data", spec.removeprefix("builtin:") + ".txt")))
        if not path.is_file():
            raise ConfigError(f"[editing] corpus {spec!r} is not shipped; use builtin:smollm2-samples, a file or model-samples")
        return TextFileCorpus(path)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"[editing] corpus {spec!r} is no file; give a .txt/.jsonl path, hf:<name> or model-samples")
    return JsonlCorpus(path) if path.suffix == ".jsonl" else TextFileCorpus(path)


@dataclass
class EditingContext:
    settings: Settings
    loaded: LoadedModel
    hparams: EditHyperParams
    store: ModelStore
    stats_dir: Path
    _moments: dict[int, torch.Tensor] | None = None

    @property
    def model_key(self) -> str:
        return self.loaded.identity

    def moments(self, progress=None, check_stop=None) -> dict[int, torch.Tensor]:  # type: ignore[no-untyped-def]
        """C_l of the edited layers (computed on the base weights, then cached); `check_stop` may
        raise to abandon the pass. A pass that computes logs its measured rate and estimate after
        the first texts, then its progress and time left (apply waits on it), and records what is
        ready for `kbsync status`."""
        if self._moments is None:
            corpus = corpus_for(self.settings.editing.corpus, self.loaded)
            n = samples_for(corpus, self.hparams.cov_samples)
            files = [cache_path(self.stats_dir, self.loaded.identity, layer, corpus.identity, n)
                     for layer in self.hparams.layers]
            cached = all(f.is_file() for f in files)
            if not cached:
                log.info("stats.start", layers=list(self.hparams.layers), corpus=corpus.identity, texts=n)
            live = list(self.store.active)
            if live:  # C_l is a property of the base model (and cached under its identity)
                self.store.materialise([])
            try:
                self._moments = second_moments(
                    self.loaded.model, self.loaded.tokenizer, self.loaded.adapter, self.hparams.layers,
                    corpus, self.hparams.cov_samples, self.stats_dir, _logged(n, progress),
                    model_identity=self.loaded.identity, check_stop=check_stop,
                )
            finally:
                if live:
                    self.store.materialise(live)
            stats_cache.record(self.stats_dir, self.settings, layers=list(self.hparams.layers), n_samples=n,
                               corpus_identity=corpus.identity, model_identity=self.loaded.identity,
                               files=[f.name for f in files])
        return self._moments


def _logged(total: int, progress: Callable[[int, int], None] | None, every_s: float = 30.0
            ) -> Callable[[int, int], None]:
    """`progress`, plus log lines: the estimate once measured, then progress with time left."""
    clock, state = PassClock(total), {"estimated": False, "logged": 0.0}

    def report(done: int, of: int) -> None:
        clock.update(done)
        if clock.measured and not state["estimated"]:
            state["estimated"] = True
            log.info("stats.estimate", done=done, total=of, texts_per_s=round(clock.rate, 3),
                     eta_s=round(clock.eta_s), message=clock.estimate())
        elif clock.elapsed_s - state["logged"] >= every_s:
            state["logged"] = clock.elapsed_s
            log.info("stats.progress", done=done, total=of, eta_s=round(clock.eta_s))
        if progress is not None:
            progress(done, of)

    return report


def editing_context(settings: Settings, state_dir: Path, loaded: LoadedModel | None = None) -> EditingContext:
    loaded = loaded or load_configured_model(settings, state_dir)
    return EditingContext(
        settings=settings,
        loaded=loaded,
        hparams=hyper_parameters(settings, loaded),
        store=ModelStore(state_dir, loaded),
        stats_dir=stats_cache.stats_dir(state_dir),
    )
