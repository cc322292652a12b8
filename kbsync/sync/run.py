"""Entry points that build a step from settings: used by the CLI and by the daemon's tick."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kbsync.config import Settings
from kbsync.model.loading import LoadedModel
from kbsync.sources.factory import open_catalogue, open_source
from kbsync.store.db import Database
from kbsync.sync.apply import ApplyReport, ApplyWorker, BatchOutcome
from kbsync.sync.diff import DiffReport, run_diff
from kbsync.sync.engine import EditingContext, editing_context


def incremental_key(settings: Settings) -> str | None:
    """SPARQL reads are incremental (schema:dateModified); local files are read whole."""
    if settings.kb.source != "sparql":
        return None
    return f"last_read:{settings.kb.endpoint}:{settings.kb.mode}"


def diff_from_settings(
    settings: Settings,
    db: Database,
    state_dir: Path,
    *,
    run_id: str,
    loaded: LoadedModel | None = None,
    relations: Sequence[str] = (),
    subjects: Sequence[str] = (),
    full: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DiffReport:
    catalogue = open_catalogue(settings)
    rels = list(relations) or list(settings.relations.enabled) or catalogue.ids()
    for r in rels:
        catalogue[r]  # an unknown id is a CatalogueError before anything is read
    source = open_source(settings, catalogue)
    def load() -> LoadedModel:
        return loaded or current_model(settings, db, state_dir)

    return run_diff(
        db, source, catalogue, load,
        relations=rels, subjects=list(subjects) or None, full=full, limit=limit, dry_run=dry_run,
        sample_unchanged=settings.probe.sample_unchanged, max_new_tokens=settings.probe.max_new_tokens,
        batch_size=settings.probe.batch_size, incremental_key=incremental_key(settings),
        scope_limited=bool(relations),  # --relation; run_diff itself knows --subject and --limit
        run_id=run_id, config_hash=settings.hash(), progress=progress,
    )


def current_model(settings: Settings, db: Database, state_dir: Path, loaded: LoadedModel | None = None) -> LoadedModel:
    """The model as deployed: base ⊕ the current version's deltas (sha256-checked), in memory."""
    ctx = editing_context(settings, state_dir, loaded)
    ApplyWorker(db, ctx, run_id="", worker="", state_dir=state_dir).load_current()
    return ctx.loaded


def apply_worker(
    settings: Settings,
    db: Database,
    state_dir: Path,
    *,
    run_id: str,
    worker: str,
    ctx: EditingContext | None = None,
    on_batch: Callable[[BatchOutcome], None] | None = None,
) -> ApplyWorker:
    ctx = ctx or editing_context(settings, state_dir)
    return ApplyWorker(db, ctx, run_id=run_id, worker=worker, state_dir=state_dir,
                       config_hash=settings.hash(), on_batch=on_batch)


__all__ = ["ApplyReport", "DiffReport", "apply_worker", "diff_from_settings"]
