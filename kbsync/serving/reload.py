"""[serve]: tell the serving engine that the current version changed (promote, rollback, compact),
check that the served model now says what kbsync verified, and record it (serve_reloads).

    reload_served(settings, db, state_dir, model_key, action=..., run_id=...) -> ServeReload row | None

  1) export the current version for the engine ([serve] export) into [serve] export_dir:
       gguf  version-<id>.gguf (the base GGUF itself when no edit is active)
       lora  version-<id>/ (PEFT adapter + adapter.gguf; none when no edit is active)
       hf    the version's own directory (the base's when no edit is active)
  2) reload, up to [serve] max_attempts times, back-off doubling from 1 s:
       command  [serve] command, split like a shell line and run without one; {path} and
                {version} filled in; a non-zero exit or a timeout is a failed attempt
       vllm     POST {url}/v1/unload_lora_adapter {"lora_name"}, then (when edits are active)
                /v1/load_lora_adapter {"lora_name", "lora_path"}; vLLM must run with
                VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora
  3) with [probe] endpoint set, ask the served model the verified edits of the current version
     (newest first, at most PROBE_LIMIT): how many it answers with the verified value
  4) one serve_reloads row and a `serve_reload` event; older exports are removed after a success.
A failed reload is never dropped: the row says so, `kbsync status` shows it, and `kbsync reload`
(or the daemon's next tick) tries again.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from kbsync.config import Settings
from kbsync.errors import KbsyncError, ServingError
from kbsync.logs import get_logger
from kbsync.model.probe import ProbeItem
from kbsync.prompts import fill
from kbsync.serving.exports import base_gguf, export_gguf, export_lora
from kbsync.serving.log import version_log
from kbsync.serving.served_probe import ServedModel
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.log import expand_compactions
from kbsync.store.models import EditRequestRow, ServeReload
from kbsync.store.states import RequestState

log = get_logger(__name__)
PROBE_LIMIT = 100    # edits asked of the served model after a reload (the newest)


def export_dir(settings: Settings, state_dir: Path) -> Path:
    return Path(settings.serve.export_dir) if settings.serve.export_dir else state_dir / "serve"


def reload_served(settings: Settings, db: Database, state_dir: Path, model_key: str, *, action: str, run_id: str,
                  sleep: Callable[[float], None] = time.sleep) -> ServeReload | None:
    """Reload the engine on the current version; None when [serve] reload = none."""
    serve = settings.serve
    if serve.reload == "none":
        return None
    t0 = time.perf_counter()
    row = ServeReload(model_key=model_key, action=action, how=serve.reload, export=serve.export, run_id=run_id,
                      state="failed", attempts=0, detail="", path="")
    try:
        current = version_log(db, model_key)
        row.model_version_id = current.version_id
        path = _export(settings, db, state_dir, model_key, current.version_id, current.batch_ids, current.path)
        row.path = str(path) if path else ""
        delay = 1.0
        for attempt in range(1, serve.max_attempts + 1):
            row.attempts = attempt
            try:
                row.detail = _reload(settings, path, current.version_id)
                row.state = "ok"
                break
            except ServingError as exc:
                row.detail = str(exc)
                log.warning("serve.reload_failed", attempt=attempt, of=serve.max_attempts, error=str(exc))
                if attempt < serve.max_attempts:
                    sleep(delay)
                    delay *= 2
        if row.state == "ok" and serve.probe_after and settings.probe.endpoint:
            try:
                row.probed, row.agreed = _probe_edits(settings, db, model_key, current.batch_ids)
            except ServingError as exc:   # reloaded, but the served model does not answer: not done
                row.state, row.detail = "failed", f"reloaded, then the served model did not answer: {exc}"
    except KbsyncError as exc:   # the export itself (a pruned version, a full disk): recorded, not dropped
        row.detail = exc.one_line()
    row.seconds = time.perf_counter() - t0
    with db.session() as s:
        s.add(row)
        s.flush()
        record_event(s, "serve_reload", run_id=run_id, config_hash=settings.hash(), ok=row.state == "ok",
                     version=row.model_version_id, how=row.how, export=row.export, path=row.path,
                     attempts=row.attempts, probed=row.probed, agreed=row.agreed, detail=row.detail[:500])
        s.expunge(row)
    if row.state == "ok":
        _remove_older(export_dir(settings, state_dir), row.path)
    return row


def last_reload(db: Database, model_key: str | None = None) -> ServeReload | None:
    with db.session() as s:
        q = select(ServeReload).order_by(ServeReload.id.desc())
        if model_key is not None:
            q = q.where(ServeReload.model_key == model_key)
        row = s.scalars(q).first()
        if row is not None:
            s.expunge(row)
        return row


def _export(settings: Settings, db: Database, state_dir: Path, model_key: str, version_id: int | None,
            batch_ids: list[int], version_path: Path | None) -> Path | None:
    """What the engine is given: a file or directory, or None (no adapter: unload)."""
    kind, folder = settings.serve.export, export_dir(settings, state_dir)
    if kind == "hf":
        if batch_ids and version_path is not None:
            return version_path
        from kbsync.model.loading import source_directory

        return source_directory(settings.model.path, state_dir)
    if not batch_ids:   # the base model: its GGUF as it is, or no adapter at all
        return base_gguf(settings.model.path) if kind == "gguf" else None
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / (f"version-{version_id}.gguf" if kind == "gguf" else f"version-{version_id}")
    if dest.exists():    # a retry of the same version: the export is there already
        return dest
    if kind == "gguf":
        export_gguf(settings, db, state_dir, model_key, dest, version_id, settings.serve.gguf_precision)
    else:
        export_lora(settings, db, state_dir, model_key, dest, version_id, settings.serve.lora_max_rank)
    return dest


def _reload(settings: Settings, path: Path | None, version_id: int | None) -> str:
    serve = settings.serve
    if serve.reload == "command":
        return _run_command(serve.command, path, version_id, serve.timeout_s)
    return _vllm(serve.url, serve.adapter_name, path, serve.timeout_s)


def _run_command(command: str, path: Path | None, version_id: int | None, timeout_s: float) -> str:
    if not command.strip():
        raise ServingError("[serve] reload = command but [serve] command is empty; set it (e.g. a restart script {path})")
    args = [a.replace("{path}", str(path or "")).replace("{version}", str(version_id or "")) for a in shlex.split(command)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise ServingError(f"[serve] command {args[0]!r} was not found; fix [serve] command") from exc
    except subprocess.TimeoutExpired as exc:
        raise ServingError(f"[serve] command {args[0]!r} ran past [serve] timeout_s = {timeout_s:g}") from exc
    tail = " ".join((done.stdout + done.stderr).split())[-300:]
    if done.returncode != 0:
        raise ServingError(f"[serve] command {args[0]!r} exited {done.returncode}: {tail or 'no output'}")
    return tail


def _vllm(url: str, name: str, path: Path | None, timeout_s: float) -> str:
    if not url:
        raise ServingError("[serve] reload = vllm but [serve] url is empty; set the server's base URL")
    base = url.rstrip("/").removesuffix("/v1")
    try:
        _post(f"{base}/v1/unload_lora_adapter", {"lora_name": name}, timeout_s)
    except ServingError as exc:   # not loaded yet (vLLM answers 400/404): nothing to unload
        if "HTTP 4" not in str(exc):
            raise
    if path is None:
        return f"unloaded {name}"
    _post(f"{base}/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)}, timeout_s)
    return f"loaded {name} from {path}"


def _post(url: str, body: dict, timeout_s: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        detail = " ".join(exc.read()[:200].decode("utf-8", "replace").split())
        raise ServingError(f"{url} answered HTTP {exc.code} {detail}".strip()) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ServingError(f"the serving engine at {url} is unreachable ({getattr(exc, 'reason', exc)})") from exc


def _probe_edits(settings: Settings, db: Database, model_key: str, batch_ids: list[int]) -> tuple[int, int]:
    """(asked, answered with the verified value) over the current version's verified edits."""
    with db.session() as s:
        ids = expand_compactions(s, batch_ids) if batch_ids else []
        rows = list(s.scalars(select(EditRequestRow).where(
            EditRequestRow.batch_id.in_(ids), EditRequestRow.state == RequestState.VERIFIED.value)
            .order_by(EditRequestRow.id.desc()).limit(PROBE_LIMIT))) if ids else []
        items = [ProbeItem(fill(r.prompt, r.subject_label), list(dict.fromkeys([r.target_new, *r.acceptable])))
                 for r in rows]
    if not items:
        return 0, 0
    served = ServedModel.from_settings(settings.probe, model_key)
    results = served.probe(items, settings.probe.max_new_tokens)
    return len(results), sum(r.agrees for r in results)


def _remove_older(folder: Path, keep: str) -> None:
    """Exports of earlier versions (version-*), once the engine holds the new one."""
    if not folder.is_dir():
        return
    for path in folder.glob("version-*"):
        if str(path) != keep and not path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def reload_if_changed(settings: Settings, db: Database, state_dir: Path, model_key: str, *, action: str,
                      run_id: str) -> ServeReload | None:
    """Reload when the current version is not the one the engine last loaded: after a promote or a
    rollback, or to try a failed reload again. None: nothing to do ([serve] reload = none, or the
    engine already serves the current version; the base before any reload is what it serves)."""
    if settings.serve.reload == "none":
        return None
    current = _current_id(db, model_key)
    with db.session() as s:
        last = s.scalars(select(ServeReload).where(ServeReload.model_key == model_key)
                         .order_by(ServeReload.id.desc())).first()
        served = s.scalars(select(ServeReload).where(ServeReload.model_key == model_key, ServeReload.state == "ok")
                           .order_by(ServeReload.id.desc())).first()
        failed_last = last is not None and last.state == "failed"
        served_id, anything = (served.model_version_id if served else None), last is not None
    if not failed_last and (served_id == current if anything else current is None):
        return None
    return reload_served(settings, db, state_dir, model_key, action=action, run_id=run_id)


def _current_id(db: Database, model_key: str) -> int | None:
    from kbsync.versions.registry import current_version

    with db.session() as s:
        row = current_version(s, model_key)
        return row.id if row is not None else None
