"""A SPARQL 1.1 endpoint (Wikidata's, or an Oxigraph server) as a knowledge source.

SPARQLWrapper sends each query as an urlencoded POST asking for JSON results, with the
configured User-Agent (Wikidata requires a contact in it), one request at a time. Faults:

- HTTP 429/503 (and 502/504): wait Retry-After (seconds or an HTTP date) when given, else
  exponential back-off with jitter; the same for timeouts and refused or reset connections;
  after ``max_attempts`` attempts, EndpointError.
- Anything that is not a SPARQL JSON result (an HTML page, a 404, a 400 for a bad query):
  EndpointError at once, in one line naming the URL and the fix.
"""

from __future__ import annotations

import ast
import json
import random
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import structlog
from SPARQLWrapper import JSON, POST, SPARQLWrapper
from SPARQLWrapper.SPARQLExceptions import SPARQLWrapperException

from kbsync.errors import ConfigError, EndpointError
from kbsync.sources.catalogue import Catalogue
from kbsync.sources.reader import QueryReader, ReadOptions, Row, Term
from kbsync.sources.useragent import check_user_agent

log = structlog.get_logger(__name__)

RETRY_STATUS = {429, 502, 503, 504}
WRAPPER_STATUS = {
    "QueryBadFormed": "HTTP 400 (query rejected as malformed)",
    "Unauthorized": "HTTP 401 Unauthorized",
    "EndPointNotFound": "HTTP 404 Not Found",
    "URITooLong": "HTTP 414 URI Too Long",
    "EndPointInternalError": "HTTP 500 Internal Server Error",
}
JSON_TYPES = {"application/sparql-results+json", "application/json"}


@dataclass(frozen=True)
class EndpointOptions:
    url: str
    user_agent: str  # "kbsync/0.1 (https://your.site/kbsync; you@your.site)": useragent.py
    timeout_s: float = 60.0  # per query (socket timeout of each read)
    max_attempts: int = 5
    backoff_s: float = 1.0  # first back-off; doubles per attempt, jittered in [d/2, d]
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 600.0  # a longer Retry-After is cut to this


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


class EndpointBackend:
    def __init__(self, options: EndpointOptions, sleep: Callable[[float], None] = time.sleep):
        if not options.url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint {options.url!r} is not an http(s) URL; fix [kb] endpoint")
        check_user_agent(options.url, options.user_agent)
        if options.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1; fix [kb] max_attempts")
        self.options = options
        self._sleep = sleep
        self._lock = threading.Lock()  # one request at a time, whatever the callers do

    def select(self, query: str) -> list[Row]:
        o = self.options
        with self._lock:
            for attempt in range(1, o.max_attempts + 1):
                try:
                    return self._once(query)
                except _Retry as exc:
                    if attempt == o.max_attempts:
                        raise EndpointError(
                            f"{o.url}: gave up after {attempt} attempts ({exc.reason}); "
                            "try again later, or raise [kb] max_attempts / timeout_s"
                        ) from exc
                    wait = exc.wait_s if exc.wait_s is not None else self._backoff(attempt)
                    log.warning(
                        "sparql.retry",
                        url=o.url,
                        attempt=attempt,
                        reason=exc.reason,
                        wait_s=round(wait, 3),
                    )
                    self._sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_max_s, self.options.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _once(self, query: str) -> list[Row]:
        o = self.options
        wrapper = SPARQLWrapper(o.url, agent=o.user_agent)
        wrapper.setMethod(POST)
        wrapper.setReturnFormat(JSON)
        wrapper.setOnlyConneg(True)  # no format=json parameters: Accept header only
        wrapper.timeout = o.timeout_s  # type: ignore[assignment]  # setTimeout() would int() it: 0.5 s -> none
        wrapper.setQuery(query)
        try:
            response = wrapper.query().response
            content_type = response.headers.get_content_type()
            body = response.read()
        except urllib.error.HTTPError as exc:  # codes SPARQLWrapper does not map
            if exc.code in RETRY_STATUS:
                wait = retry_after_seconds(exc.headers.get("Retry-After"), o.retry_after_max_s)
                raise _Retry(f"HTTP {exc.code}", wait) from exc
            raise EndpointError(
                f"{o.url}: HTTP {exc.code} {exc.reason}; check [kb] endpoint"
            ) from exc
        except SPARQLWrapperException as exc:  # 400, 401, 404, 414, 500
            status = WRAPPER_STATUS.get(type(exc).__name__, type(exc).__name__)
            detail = _response_line(exc)
            raise EndpointError(
                f"{o.url}: {status}{': ' + detail if detail else ''}; check [kb] endpoint and [kb] subjects"
            ) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _Retry(f"no answer within {o.timeout_s:g} s") from exc
            raise _Retry(f"cannot connect: {reason}") from exc
        except TimeoutError as exc:
            raise _Retry(f"no answer within {o.timeout_s:g} s") from exc
        except (ConnectionError, OSError) as exc:
            raise _Retry(f"connection failed: {exc}") from exc
        return self._rows(content_type, body)

    def _rows(self, content_type: str, body: bytes) -> list[Row]:
        url = self.options.url
        try:
            data = json.loads(body)
            bindings = data["results"]["bindings"]
            if not isinstance(bindings, list):
                raise TypeError("results.bindings is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise EndpointError(
                f"{url} answered {content_type}, not SPARQL JSON results; "
                "set [kb] endpoint to a SPARQL endpoint URL such as https://query.wikidata.org/sparql"
            ) from exc
        if content_type not in JSON_TYPES:
            log.warning("sparql.content_type", url=url, content_type=content_type)
        return [{name: _term(b) for name, b in row.items()} for row in bindings]


def retry_after_seconds(
    value: str | None, cap_s: float, now: datetime | None = None
) -> float | None:
    """Retry-After as seconds (a number, or an HTTP date from now), capped; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), cap_s)


class SparqlEndpointSource(QueryReader):
    def __init__(
        self,
        endpoint: EndpointOptions,
        *,
        options: ReadOptions | None = None,
        catalogue: Catalogue | None = None,
    ):
        super().__init__(options or ReadOptions(), catalogue)
        self._backend = EndpointBackend(endpoint)

    def backend(self) -> EndpointBackend:
        return self._backend


def _term(binding: dict) -> Term:
    kind = binding.get("type")
    if kind == "uri":
        return Term("iri", binding["value"])
    if kind in ("literal", "typed-literal"):
        return Term("literal", binding["value"], binding.get("xml:lang"), binding.get("datatype"))
    return Term("bnode", binding.get("value", ""))


def _response_line(exc: SPARQLWrapperException) -> str:
    """The first line of the server's answer, which SPARQLWrapper keeps only as a repr in str(exc)."""
    _, _, raw = str(exc).partition("Response:\n")
    try:
        body = ast.literal_eval(raw) if raw else b""
    except (ValueError, SyntaxError):
        body = raw.encode()
    lines = body.decode("utf-8", "replace").strip().splitlines() if isinstance(body, bytes) else []
    return " ".join(lines[0].split())[:200] if lines else ""
