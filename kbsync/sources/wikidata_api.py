"""Wikidata's web API as a bot uses it: entity fetches and RecentChanges, politely.

- ``Special:EntityData/{id}.json`` (``[kb] entity_url``): one entity a call; or
  ``wbgetentities`` at ``[kb] api_url``: up to 50 ids a call (``MAX_IDS``), labels only
  (``props=labels|aliases|info``, one language) where only names are needed.
- ``list=recentchanges`` at the same ``api_url``: the edits of a time range, 500 a page,
  followed by ``rccontinue``; Wikidata keeps 30 days of them.

Every call is a GET with the configured User-Agent (a real contact for Wikimedia hosts:
useragent.py) and ``maxlag`` (API calls). Faults: HTTP 429/502/503/504 and a ``maxlag`` error
(HTTP 200 with ``{"error": {"code": "maxlag", "lag": 7}}``) wait ``Retry-After`` (else the
reported lag, else exponential back-off) and retry, ``max_attempts`` in all, then EndpointError;
timeouts and refused connections back off the same way; an HTTP 404 from EntityData is a
missing (deleted) entity; any other error, or an answer that is not JSON, is EndpointError at once.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from kbsync.errors import ConfigError, EndpointError
from kbsync.sources.entity_json import Entity, entities_of
from kbsync.sources.sparql import retry_after_seconds
from kbsync.sources.useragent import check_user_agent

log = structlog.get_logger(__name__)

MAX_IDS = 50  # wbgetentities' limit for a client without the apihighlimits right
RETRY_STATUS = {429, 502, 503, 504}


@dataclass(frozen=True)
class ApiOptions:
    api_url: str = "https://www.wikidata.org/w/api.php"
    entity_url: str = "https://www.wikidata.org/wiki/Special:EntityData/{id}.json"
    user_agent: str = ""
    fetch: Literal["wbgetentities", "entitydata"] = "wbgetentities"
    language: str = "en"
    maxlag_s: int = 5
    timeout_s: float = 60.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 600.0


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


class WikidataApi:
    def __init__(self, options: ApiOptions, sleep: Callable[[float], None] = time.sleep):
        for url, setting in ((options.api_url, "[kb] api_url"), (options.entity_url, "[kb] entity_url")):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{url!r} is not an http(s) URL; fix {setting}")
            check_user_agent(url, options.user_agent)
        if "{id}" not in options.entity_url:
            raise ConfigError(f"{options.entity_url!r} has no {{id}} for the entity id; fix [kb] entity_url")
        self.options = options
        self._sleep = sleep
        self.calls = 0  # HTTP requests made, retries included

    # -- entities (an EntityFetcher) --------------------------------------------------------
    def fetch(self, ids: Sequence[str], labels_only: bool = False) -> dict[str, Entity]:
        out: dict[str, Entity] = {}
        if self.options.fetch == "entitydata":
            for i in ids:
                answer = self.get_json(self.options.entity_url.format(id=i), missing_ok=True)
                out.update(entities_of(answer) if answer else {})
            return out
        props = "labels|aliases|info" if labels_only else "labels|aliases|claims|info"
        for start in range(0, len(ids), MAX_IDS):
            page = ids[start:start + MAX_IDS]
            out.update(entities_of(self.api({"action": "wbgetentities", "ids": "|".join(page), "props": props,
                                             "languages": self.options.language})))
        return out

    # -- RecentChanges -----------------------------------------------------------------------
    def recent_changes(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Item edits and creations in [start, end], oldest first: {title, revid, timestamp, ...}."""
        params = {"action": "query", "list": "recentchanges", "rcnamespace": "0", "rctype": "edit|new",
                  "rcprop": "title|ids|timestamp", "rclimit": "500", "rcdir": "newer",
                  "rcstart": _stamp(start), "rcend": _stamp(end)}
        more: dict[str, str] = {"continue": ""}
        while True:
            answer = self.api({**params, **more})
            yield from (answer.get("query") or {}).get("recentchanges", ())
            if "continue" not in answer:
                return
            more = {k: str(v) for k, v in answer["continue"].items()}

    # -- HTTP --------------------------------------------------------------------------------
    def api(self, params: Mapping[str, str]) -> dict[str, Any]:
        query = {**params, "format": "json", "maxlag": str(self.options.maxlag_s)}
        return self.get_json(self.options.api_url + "?" + urllib.parse.urlencode(query)) or {}

    def get_json(self, url: str, missing_ok: bool = False) -> dict[str, Any] | None:
        o = self.options
        for attempt in range(1, o.max_attempts + 1):
            try:
                return self._once(url, missing_ok)
            except _Retry as exc:
                if attempt == o.max_attempts:
                    raise EndpointError(f"{_short(url)}: gave up after {attempt} attempts ({exc.reason}); "
                                        "try again later, or raise [kb] max_attempts / timeout_s") from exc
                wait = exc.wait_s if exc.wait_s is not None else self._backoff(attempt)
                log.warning("wikidata.retry", url=_short(url), attempt=attempt, reason=exc.reason,
                            wait_s=round(wait, 3))
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _once(self, url: str, missing_ok: bool) -> dict[str, Any] | None:
        o = self.options
        request = urllib.request.Request(url, headers={"User-Agent": o.user_agent, "Accept": "application/json",
                                                       "Accept-Encoding": "identity"})
        self.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=o.timeout_s) as response:
                body, headers = response.read(), response.headers
        except urllib.error.HTTPError as exc:
            if exc.code in RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code}", retry_after_seconds(exc.headers.get("Retry-After"),
                                                                     o.retry_after_max_s)) from exc
            if exc.code == 404 and missing_ok:
                return None
            raise EndpointError(f"{_short(url)}: HTTP {exc.code} {exc.reason}; check [kb] api_url / entity_url") from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retry(f"no answer within {o.timeout_s:g} s" if isinstance(reason, TimeoutError)
                         else f"cannot connect: {reason}") from exc
        try:
            answer = json.loads(body)
            if not isinstance(answer, dict):
                raise TypeError("not a JSON object")
        except (ValueError, TypeError) as exc:
            raise EndpointError(f"{_short(url)} answered {headers.get_content_type()}, not JSON; "
                                "check [kb] api_url / entity_url") from exc
        error = answer.get("error")
        if isinstance(error, dict):
            if error.get("code") == "maxlag":  # the database replicas lag: come back later, as asked
                wait = retry_after_seconds(headers.get("Retry-After"), o.retry_after_max_s)
                lag = error.get("lag")
                raise _Retry(f"maxlag ({lag} s lag)", wait if wait is not None else
                             min(float(lag), o.retry_after_max_s) if isinstance(lag, int | float) else None)
            raise EndpointError(f"{_short(url)}: API error {error.get('code')}: {error.get('info', '')}"[:300])
        return answer

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_max_s, self.options.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
