"""The dashboard's request-side state: the database, the page size, the actions (None: read-only),
the named action tokens and the templates with their filters; every route is a method's caller
(routes.py).
"""

from __future__ import annotations

import hmac
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from kbsync.config import DashboardSettings, GateSettings
from kbsync.dashboard.actions import Actions
from kbsync.errors import ConfigError
from kbsync.store.db import Database

HERE = Path(__file__).parent
MIN_TOKEN_CHARS = 16
UNNAMED = "operator"    # the audit's name for the one unnamed [dashboard] token
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass
class Dashboard:
    db: Database
    page_size: int
    actions: Actions | None          # None: read-only
    tokens: dict[str, str]           # name -> secret; the name is the actor the audit records
    templates: Jinja2Templates
    gate: GateSettings | None = None  # [gate]: the headroom's floor and ceiling on the overview

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context |= {"actions_enabled": self.actions is not None}
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def identify(self, form_token: str) -> tuple[str, str]:
        """(the name of the token presented, '') when an action may run; ('', why not) otherwise."""
        if self.actions is None:
            return "", "this dashboard is read-only: start it with --allow-actions and [dashboard] tokens"
        given, name = form_token.encode(), ""
        for candidate, secret in self.tokens.items():   # every token compared, each in constant time
            if hmac.compare_digest(given, secret.encode()) and given:
                name = candidate
        return (name, "") if name else ("", "missing or wrong token: nothing was changed")


def action_tokens(dashboard: DashboardSettings) -> dict[str, str]:
    """name -> secret: [dashboard] tokens, then those of [dashboard] tokens_file, then the one
    unnamed [dashboard] token under the name "operator" (the setting before named tokens)."""
    tokens = dict(dashboard.tokens)
    if dashboard.tokens_file:
        path = Path(dashboard.tokens_file).expanduser()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"[dashboard] tokens_file {path}: cannot read it ({exc.strerror}); "
                              "fix the path or its permissions") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"[dashboard] tokens_file {path}: not TOML ({exc}); "
                              'write one name = "secret" line per operator') from exc
        for name, secret in data.items():
            if not isinstance(secret, str):
                raise ConfigError(f'[dashboard] tokens_file {path}: {name} is not a "secret" string')
            if tokens.get(name, secret) != secret:
                raise ConfigError(f"dashboard token {name!r} is named in [dashboard] tokens and in {path} "
                                  "with different secrets; keep one")
            tokens[name] = secret
    if dashboard.token:
        if tokens.get(UNNAMED, dashboard.token) != dashboard.token:
            raise ConfigError(f"[dashboard] token and [dashboard] tokens.{UNNAMED} differ; the unnamed token "
                              f"is {UNNAMED!r}: keep one of them")
        tokens[UNNAMED] = dashboard.token
    return tokens


def check_tokens(allow_actions: bool, tokens: dict[str, str]) -> None:
    """Actions need at least one token; each named plainly, long, and its own (the audit tells
    operators apart by the token they present)."""
    if not allow_actions:
        return
    if not tokens:
        raise ConfigError(f"dashboard actions need a token of at least {MIN_TOKEN_CHARS} characters; set "
                          "[dashboard] tokens (name = secret; or KBSYNC_DASHBOARD__TOKENS) or [dashboard] token "
                          "(KBSYNC_DASHBOARD__TOKEN), or drop --allow-actions")
    owner: dict[str, str] = {}
    for name, secret in tokens.items():
        if not TOKEN_NAME.fullmatch(name):
            raise ConfigError(f"dashboard token name {name!r} is not a plain name (letters, digits, _ . @ -; "
                              "at most 64): the audit records it")
        if len(secret) < MIN_TOKEN_CHARS:
            raise ConfigError(f"dashboard actions need a token of at least {MIN_TOKEN_CHARS} characters; "
                              f"token {name!r} has {len(secret)}")
        if secret in owner:
            raise ConfigError(f"dashboard tokens {owner[secret]!r} and {name!r} share one secret: the audit "
                              "could not tell them apart; give each operator their own")
        owner[secret] = name


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def _share(value: float | None) -> str:
    """A share, or "-" where nothing measured it (e.g. no neighbour available)."""
    return "-" if value is None else f"{value:.2f}"


def _number(value: float | int | None) -> str:
    """A figure as a reader wants it: 0.867, not 0.8666666666666667; 6083.5, not 6083.5245993114."""
    if value is None:
        return "-"
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, dict):
        return f"({_pairs(value, ', ')})"
    if isinstance(value, list | tuple):
        return ", ".join(" ".join(map(_value, v)) if isinstance(v, list | tuple) else _value(v) for v in value)
    return str(value)


def _pairs(details: dict[str, Any] | None, sep: str = "; ", skip: tuple[str, ...] = ()) -> str:
    """An event's details as `key value; ...`: nothing for what is empty (None, "", [], {}), a text
    that starts with its key once (`gate passed: ...`, not `gate gate passed: ...`), figures rounded;
    not the keys in `skip`."""
    parts = []
    for key, value in (details or {}).items():
        if key in skip or value is None or value == "" or value == [] or value == {}:
            continue
        text = _value(value)
        said = isinstance(value, str) and (text == key or text.lower().startswith(key.replace("_", " ") + " "))
        parts.append(text if said else f"{key} {text}")
    return sep.join(parts)


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters |= {"when": _when, "share": _share, "short": lambda h: (h or "")[:12], "pairs": _pairs,
                      "num": _number}
    return t
