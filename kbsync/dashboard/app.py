"""The dashboard as an ASGI application (Starlette): pages are Jinja2 templates rendered on the
server, charts are inline SVG, the one stylesheet ships in the package. No JavaScript.

Read-only unless built with `allow_actions` and a token: only then do the action forms appear,
and every POST must carry the token (compared in constant time) whatever the page shows.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from kbsync.config import Settings
from kbsync.dashboard import routes
from kbsync.dashboard.actions import Actions
from kbsync.dashboard.board import HERE, Dashboard, check_token, templates
from kbsync.store.db import Database


def create_app(db: Database, *, page_size: int = 50, actions: Actions | None = None, token: str = "") -> Starlette:
    """The dashboard over `db`; pass `actions` (and a token) to allow changes."""
    check_token(actions is not None, token)
    board = Dashboard(db, page_size, actions, token, templates())
    app = Starlette(routes=[*routes.routes(board),
                            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")],
                    exception_handlers={404: routes.not_found(board)})
    app.state.dashboard = board
    return app




def app_from_settings(settings: Settings, db: Database, state_dir: Path, run_id: str, *,
                      allow_actions: bool) -> Starlette:
    """The dashboard as `kbsync dashboard` and the daemon serve it."""
    token = settings.dashboard.token
    check_token(allow_actions, token)
    actions = Actions(settings, db, state_dir, run_id) if allow_actions else None
    return create_app(db, page_size=settings.dashboard.page_size, actions=actions, token=token)


__all__ = ["Dashboard", "app_from_settings", "create_app"]
