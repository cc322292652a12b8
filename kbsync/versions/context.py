"""The model under edit: the loaded base model, its hyper-parameters, its key statistics C_l
and its store of versions (base ⊕ delta log), built from settings by `editing_context`.
Everything apply, rollback, compact and verify need to edit one model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kbsync.config import Settings
from kbsync.editing import stats_cache
from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model
from kbsync.editing.covariance import PassClock, cache_path, samples_for, second_moments
from kbsync.editing.hparams import EditHyperParams
from kbsync.logs import get_logger
from kbsync.model.loading import LoadedModel
from kbsync.versions.store import ModelStore

log = get_logger(__name__)


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
