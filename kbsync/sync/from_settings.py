"""Entry points that build a step from settings: used by the CLI and by the daemon's tick."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kbsync.config import Settings
from kbsync.errors import ConfigError
from kbsync.model.loading import LoadedModel, model_identity, source_directory
from kbsync.runtime import Stop
from kbsync.serving.served_probe import ServedModel
from kbsync.sources.factory import configured_as_of, open_catalogue, open_source
from kbsync.store.db import Database
from kbsync.sync.apply import ApplyReport
from kbsync.sync.bootstrap import BootstrapReport
from kbsync.sync.diff import DiffOptions, DiffReport, run_diff
from kbsync.sync.follow import FollowReport
from kbsync.versions import registry
from kbsync.versions.context import EditingContext, editing_context
from kbsync.versions.writer import ModelWriter


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
    loaded: LoadedModel | Callable[[], LoadedModel] | None = None,
    relations: Sequence[str] = (),
    subjects: Sequence[str] = (),
    full: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
    snapshot_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
    as_of: datetime | None = None,
    accept_shrink: bool = False,
) -> DiffReport:
    """`as_of` (else [kb] as_of) replays the KB at that moment: what is current, and the settle clock.
    `loaded` is the model, or what loads it (called only when there is something to probe)."""
    catalogue = open_catalogue(settings)
    as_of = as_of or configured_as_of(settings)
    rels = list(relations) or list(settings.relations.enabled) or catalogue.ids()
    for r in rels:
        catalogue[r]  # an unknown id is a CatalogueError before anything is read
    scratch = state_dir / "scratch"  # the spilled read and large RDF stores: beside the state, not in RAM
    source = open_source(settings, catalogue, as_of=as_of, scratch_dir=scratch)
    def load() -> LoadedModel | ServedModel:
        if settings.probe.endpoint:   # the served model answers; the configured model's key is blamed
            return ServedModel.from_settings(settings.probe, configured_model_key(settings, state_dir))
        if callable(loaded):
            return loaded()
        return loaded or current_model(settings, db, state_dir)

    options = DiffOptions(
        relations=rels, subjects=list(subjects) or None, full=full, limit=limit, dry_run=dry_run,
        snapshot_only=snapshot_only, scope_limited=bool(relations),  # --relation; run_diff knows --subject, --limit
        sample_unchanged=settings.probe.sample_unchanged, max_new_tokens=settings.probe.max_new_tokens,
        batch_size=settings.probe.batch_size, incremental_key=incremental_key(settings),
        settle_s=settings.kb.settle_s, clock=as_of, max_label_chars=settings.kb.max_label_chars,
        on_damage=settings.verify.on_damage, work_dir=scratch, run_id=run_id, config_hash=settings.hash(),
        accept_shrink=accept_shrink)
    return run_diff(db, source, catalogue, load, options, progress)


def follow_from_settings(settings: Settings, db: Database, state_dir: Path, *, run_id: str,
                         loaded: LoadedModel | Callable[[], LoadedModel] | None = None,
                         snapshot_only: bool = False, max_events: int | None = None) -> FollowReport:
    """`kbsync follow --until-caught-up`: the change stream, then each changed item diffed as
    `kbsync diff` diffs (the model is loaded once, when something is first to be probed)."""
    from kbsync.sources.entities import EntitySource
    from kbsync.sources.factory import open_event_stream, open_wikidata_api
    from kbsync.sources.reader import ReadOptions
    from kbsync.sources.subjects import SubjectSelection
    from kbsync.sync.follow import FollowOptions, follow

    if settings.kb.source != "wikidata":
        raise ConfigError(f"kbsync follow follows Wikidata's change stream: set [kb] source = \"wikidata\" "
                          f"(it is {settings.kb.source!r}; use kbsync diff for it)")
    catalogue = open_catalogue(settings)
    rels = list(settings.relations.enabled) or catalogue.ids()
    for r in rels:
        catalogue[r]
    as_of = configured_as_of(settings)
    api, stream = open_wikidata_api(settings), open_event_stream(settings)
    read_options = ReadOptions(language=settings.kb.language, page_size=min(settings.kb.page_size, 50),
                               as_of=as_of)
    source = EntitySource(api, options=read_options, catalogue=catalogue)
    model: list[LoadedModel] = []

    def load() -> LoadedModel:
        if not model:
            model.append(loaded() if callable(loaded) else loaded or current_model(settings, db, state_dir))
        return model[0]

    scratch = state_dir / "scratch"

    def diff_items(ids: list[str]) -> DiffReport:
        options = DiffOptions(
            relations=rels, subjects=ids, snapshot_only=snapshot_only, sample_unchanged=0,
            max_new_tokens=settings.probe.max_new_tokens, batch_size=settings.probe.batch_size,
            settle_s=settings.kb.settle_s, clock=as_of, max_label_chars=settings.kb.max_label_chars,
            on_damage=settings.verify.on_damage, work_dir=scratch, run_id=run_id, config_hash=settings.hash(),
            accept_shrink=True)   # an item fetched without its facts lost them (or was deleted): not an outage
        return run_diff(db, source, catalogue, load, options)

    selection = SubjectSelection.from_config(settings.kb.subjects)
    configured = frozenset(i.rsplit("/", 1)[-1] for i in selection.ids or ())
    options = FollowOptions(relations=rels, configured=configured,
                            window=timedelta(seconds=settings.kb.stream_window_s), chunk=settings.kb.follow_chunk,
                            max_events=max_events, now=(lambda: as_of) if as_of else (lambda: datetime.now(UTC)),
                            live=as_of is None,
                            run_id=run_id, config_hash=settings.hash())
    return follow(db, stream, api, diff_items, options)


def bootstrap_from_settings(settings: Settings, db: Database, state_dir: Path, dump: Path, *, run_id: str,
                            loaded: LoadedModel | Callable[[], LoadedModel] | None = None, probe: bool = False,
                            dry_run: bool = False, accept_shrink: bool = False) -> BootstrapReport:
    """`kbsync bootstrap --dump FILE`: the snapshot from a Wikidata JSON dump, or a reconcile with it."""
    from kbsync.sources.reader import ReadOptions
    from kbsync.sources.subjects import SubjectSelection
    from kbsync.sync.bootstrap import bootstrap

    catalogue = open_catalogue(settings)
    rels = list(settings.relations.enabled) or catalogue.ids()
    for r in rels:
        catalogue[r]
    as_of = configured_as_of(settings)
    selection = SubjectSelection.from_config(settings.kb.subjects)
    only = {i.rsplit("/", 1)[-1] for i in selection.ids} if selection.ids is not None else None
    scratch = state_dir / "scratch"

    def load() -> LoadedModel:
        return loaded() if callable(loaded) else loaded or current_model(settings, db, state_dir)

    template = DiffOptions(
        relations=rels, dry_run=dry_run, sample_unchanged=0, max_new_tokens=settings.probe.max_new_tokens,
        batch_size=settings.probe.batch_size, settle_s=settings.kb.settle_s, clock=as_of,
        max_label_chars=settings.kb.max_label_chars, on_damage=settings.verify.on_damage, work_dir=scratch,
        run_id=run_id, config_hash=settings.hash(), accept_shrink=accept_shrink)
    read = ReadOptions(language=settings.kb.language, page_size=settings.kb.page_size, as_of=as_of)
    return bootstrap(db, dump, catalogue, load, template, read, only, scratch, probe=probe)


def current_model(settings: Settings, db: Database, state_dir: Path, loaded: LoadedModel | None = None) -> LoadedModel:
    """The model as deployed: base ⊕ the current version's deltas (sha256-checked), in memory."""
    ctx = editing_context(settings, state_dir, loaded)
    registry.load_current(db, ctx.store)
    return ctx.loaded


def configured_model_key(settings: Settings, state_dir: Path) -> str:
    """The identity of the configured model, from its cached hash: no weights are loaded."""
    return model_identity(source_directory(settings.model.path, state_dir), state_dir)


def model_writer(settings: Settings, db: Database, state_dir: Path, *, run_id: str, worker: str,
                 stop: Stop | None = None, ctx: EditingContext | None = None) -> ModelWriter:
    """A writer of the configured model; the model is loaded when a job first needs it (or `ctx`)."""
    def load() -> EditingContext:
        return ctx or editing_context(settings, state_dir)

    key = ctx.model_key if ctx is not None else configured_model_key(settings, state_dir)
    return ModelWriter(settings, db, state_dir, key, load, run_id=run_id, worker=worker, stop=stop or Stop())


__all__ = ["ApplyReport", "DiffReport", "configured_model_key", "current_model", "diff_from_settings", "model_writer"]
