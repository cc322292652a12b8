"""The dashboard as an ASGI application (Starlette): pages are Jinja2 templates rendered on the
server, charts are inline SVG, the one stylesheet ships in the package. No JavaScript.

Read-only unless built with `allow_actions` and a token: only then do the action forms appear,
and every POST must carry the token (compared in constant time) whatever the page shows.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from kbsync.config import Settings
from kbsync.dashboard.actions import Actions
from kbsync.errors import ConfigError
from kbsync.store.db import Database

HERE = Path(__file__).parent
MIN_TOKEN_CHARS = 16


@dataclass
class Dashboard:
    db: Database
    page_size: int
    actions: Actions | None          # None: read-only
    token: str
    templates: Jinja2Templates

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context |= {"actions_enabled": self.actions is not None}
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def refusal(self, form_token: str) -> str:
        """Why an action request is refused ('' when it may run)."""
        if self.actions is None:
            return "this dashboard is read-only: start it with --allow-actions and a [dashboard] token"
        if not form_token or not hmac.compare_digest(form_token.encode(), self.token.encode()):
            return "missing or wrong token: nothing was changed"
        return ""


def check_token(allow_actions: bool, token: str) -> None:
    if allow_actions and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"dashboard actions need a token of at least {MIN_TOKEN_CHARS} characters; "
                          "set [dashboard] token (or KBSYNC_DASHBOARD__TOKEN), or drop --allow-actions")


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def _share(value: float | None) -> str:
    """A share, or "-" where nothing measured it (e.g. no neighbour available)."""
    return "-" if value is None else f"{value:.2f}"


def _pairs(details: dict[str, Any] | None) -> str:
    """An event's details as `key value; ...`, nested values as compact JSON."""
    return "; ".join(f"{k} {v if isinstance(v, str) else json.dumps(v, separators=(', ', ': '))}"
                     for k, v in (details or {}).items())


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters |= {"when": _when, "share": _share, "short": lambda h: (h or "")[:12], "pairs": _pairs}
    return t


def create_app(db: Database, *, page_size: int = 50, actions: Actions | None = None, token: str = "") -> Starlette:
    """The dashboard over `db`; pass `actions` (and a token) to allow changes."""
    from kbsync.dashboard import routes

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
