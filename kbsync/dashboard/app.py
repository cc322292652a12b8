"""The dashboard as an ASGI application (Starlette): pages are Jinja2 templates rendered on the
server, charts are inline SVG, the one stylesheet ships in the package. No JavaScript.

Read-only unless built with `allow_actions` and tokens: only then do the action forms appear,
and every POST must carry one of the tokens (compared in constant time) whatever the page shows;
the name of the token it carried is the actor the audit records.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from kbsync.config import GateSettings, Settings
from kbsync.dashboard import routes
from kbsync.dashboard.actions import Actions
from kbsync.dashboard.board import HERE, Dashboard, action_tokens, check_tokens, templates
from kbsync.store.db import Database


def create_app(db: Database, *, page_size: int = 50, actions: Actions | None = None,
               tokens: dict[str, str] | None = None, gate: GateSettings | None = None) -> Starlette:
    """The dashboard over `db`; pass `actions` (and tokens, name -> secret) to allow changes, and
    [gate] for the headroom's floor and ceiling."""
    check_tokens(actions is not None, tokens or {})
    board = Dashboard(db, page_size, actions, dict(tokens or {}), templates(), gate)
    app = Starlette(routes=[*routes.routes(board),
                            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")],
                    exception_handlers={404: routes.not_found(board)})
    app.state.dashboard = board
    return app


def app_from_settings(settings: Settings, db: Database, state_dir: Path, run_id: str, *,
                      allow_actions: bool) -> Starlette:
    """The dashboard as `kbsync dashboard` and the daemon serve it."""
    tokens = action_tokens(settings.dashboard) if allow_actions else {}
    check_tokens(allow_actions, tokens)
    actions = Actions(settings, db, state_dir, run_id) if allow_actions else None
    return create_app(db, page_size=settings.dashboard.page_size, actions=actions, tokens=tokens,
                      gate=settings.gate)


__all__ = ["Dashboard", "app_from_settings", "create_app"]
