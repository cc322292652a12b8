"""What can be checked of a configuration without loading the model: `kbsync config check`.

Loading the settings already checked their types and ranges; this checks what they point at
and what only fails later, each problem one line naming the key and the fix:

    state      the state directory can be written
    model      builtin:NAME is installed; a directory has config.json; a .gguf file exists
    kb         every [kb] files entry exists (source = rdf); the endpoint is an http(s) URL
    relations  the catalogue file reads; every [relations] enabled id is in it
    editing    a corpus given as a path (editing and gate) is a file
    schedule   the time zone is an IANA zone; the cron expression parses (the daemon's trigger)
    dashboard  actions need a token of at least 16 characters; each token set is that long, named plainly, its own
    database   it answers and its schema is at the head migration

A hub id (org/name) is not looked up: that needs the network, and the model's first load does it.
It lives beside the daemon because it checks what the daemon will need (schedule, dashboard).
"""

from __future__ import annotations

from pathlib import Path

from kbsync.daemon.scheduler import trigger_for
from kbsync.dashboard.board import action_tokens, check_tokens
from kbsync.errors import ConfigError, KbsyncError, StateError
from kbsync.runtime import App
from kbsync.sources.factory import open_catalogue
from kbsync.sources.rdf import resolve_path


def problems(app: App) -> list[KbsyncError]:
    """Every problem found, each an error naming the key and the fix ([] when ready to run)."""
    found: list[KbsyncError] = []
    for check in (_state, _model, _kb, _relations, _corpus, _schedule, _dashboard, _database):
        if check is _database and found[:1] and isinstance(found[0], StateError) and not app.settings.database.url:
            continue   # the SQLite file would be in the state directory just named
        try:
            found += [ConfigError(line) for line in check(app)]
        except KbsyncError as exc:
            found.append(exc)
    return found


def _state(app: App) -> list[str]:
    _ = app.state_dir    # StateError when it cannot be made or written
    return []


def _model(app: App) -> list[str]:
    spec = app.settings.model.path
    if spec.startswith("builtin:"):
        from kbsync.model.loading import check_builtin  # torch comes with it: only when needed

        check_builtin(spec.removeprefix("builtin:"))   # ModelError: unknown, or its package missing
        return []
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return [] if path.is_file() else [f"[model] path: the GGUF file {path} does not exist; fix [model] path"]
    if path.is_dir():
        return [] if (path / "config.json").is_file() else \
            [f"[model] path: {path} has no config.json; point it at a HF model directory"]
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        return [f"[model] path: {path} does not exist; give a HF model directory, a .gguf file, "
                "builtin:smollm2-135m or a hub id (org/name)"]
    return []   # a hub id: looked up (online) at the first load


def _kb(app: App) -> list[str]:
    kb = app.settings.kb
    if kb.source == "sparql":
        ok = kb.endpoint.startswith(("http://", "https://"))
        return [] if ok else [f"[kb] endpoint: {kb.endpoint!r} is not an http(s) URL"]
    if kb.source == "wikidata":
        from kbsync.sources.factory import open_event_stream, open_wikidata_api

        try:
            open_wikidata_api(app.settings)
            open_event_stream(app.settings)
        except KbsyncError as exc:
            return [exc.one_line()]
        return []
    out = []
    for entry in kb.files:
        path = resolve_path(entry)   # SourceError for an unknown builtin:NAME
        if not path.is_file():
            out.append(f"[kb] files: {path} does not exist; fix the path or drop it from [kb] files")
    return out


def _relations(app: App) -> list[str]:
    catalogue = open_catalogue(app.settings)    # CatalogueError: the extra catalogue does not read
    unknown = [r for r in app.settings.relations.enabled if r not in catalogue]
    if not unknown:
        return []
    return [f"[relations] enabled: unknown relation id(s) {', '.join(unknown)}; known: {', '.join(catalogue.ids())} "
            "(add them with a [relations] catalogue file)"]


def _corpus(app: App) -> list[str]:
    s = app.settings
    out = []
    for key, spec in (("[editing] corpus", s.editing.corpus), ("[gate] corpus", s.gate.corpus)):
        if spec in ("auto", "model-samples") or spec.startswith(("builtin:", "hf:")):
            continue
        if not Path(spec).expanduser().is_file():
            out.append(f"{key}: {spec} is not a file; give a .txt/.jsonl path, builtin:NAME, model-samples or auto")
    return out


def _schedule(app: App) -> list[str]:
    trigger_for(app.settings.schedule)   # ConfigError naming the time zone or the cron expression
    return []


def _dashboard(app: App) -> list[str]:
    d = app.settings.dashboard
    tokens = action_tokens(d)
    if d.allow_actions or tokens:   # actions on, or tokens waiting for `kbsync dashboard --allow-actions`
        check_tokens(True, tokens)
    return []


def _database(app: App) -> list[str]:
    app.database()   # DatabaseError: unreachable; SchemaOutOfDateError: `kbsync db upgrade`
    return []


