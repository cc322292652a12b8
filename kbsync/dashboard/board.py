"""The dashboard's request-side state: the database, the page size, the actions (None: read-only),
the token and the templates with their filters; every route is a method's caller (routes.py).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

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
