"""Wikimedia EventStreams (``recentchange``) as Server-Sent Events, resumed by Last-Event-ID.

The stream is one long HTTP response of SSE frames::

    event: message
    id: [{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":5230107412},...]
    data: {"$schema":"/mediawiki/recentchange/1.0.0","meta":{"dt":"2025-05-20T08:00:01Z",...},
    data:  "type":"edit","namespace":0,"title":"Q42","wiki":"wikidatawiki","revision":{"old":1,"new":2},...}
    <blank line>

``events()`` yields each frame's id and parsed data. A dropped connection (the service closes
them every ~15 minutes; a datacentre switch) is resumed with the last ``id`` as the
``Last-Event-ID`` header; without an id yet, ``?since=`` (an ISO time, kept by the service for
about a week) says where to start. It returns, caught up, when no event came for ``idle_s``,
when an event is from ``live_from`` on (the stream reached the present), or when a reconnect
brings nothing new. HTTP 429/5xx and refused connections wait (Retry-After, else back-off);
``max_attempts`` failed connections in a row are an EndpointError. Events are passed on in the
order they come: they can be out of order and repeated (two datacentres): the caller dedupes.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from kbsync.errors import ConfigError, EndpointError
from kbsync.sources.sparql import retry_after_seconds
from kbsync.sources.timeline import LONG_AGO, parse_time
from kbsync.sources.useragent import check_user_agent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StreamEvent:
    id: str | None  # the SSE id: where to resume after this event
    data: dict[str, Any]

    @property
    def dt(self) -> str:
        return str((self.data.get("meta") or {}).get("dt") or "")


@dataclass(frozen=True)
class StreamOptions:
    url: str = "https://stream.wikimedia.org/v2/stream/recentchange"
    user_agent: str = ""
    idle_s: float = 10.0  # no event for this long: caught up
    connect_timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 600.0


class EventStream:
    def __init__(self, options: StreamOptions, sleep: Callable[[float], None] = time.sleep):
        if not options.url.startswith(("http://", "https://")):
            raise ConfigError(f"{options.url!r} is not an http(s) URL; fix [kb] eventstreams_url")
        check_user_agent(options.url, options.user_agent)
        self.options = options
        self._sleep = sleep
        self.connections = 0

    def events(self, last_event_id: str | None = None, since: str | None = None,
               live_from: datetime | None = None) -> Iterator[StreamEvent]:
        resume, failures = last_event_id, 0
        while True:
            got = 0
            try:
                for event in self._connection(resume, since if resume is None else None):
                    failures = 0
                    got += 1
                    if event.id is not None:
                        resume = event.id
                    yield event
                    if live_from is not None and event.dt and _moment(event.dt) >= live_from:
                        return  # the stream reached the present: caught up
            except _Idle:
                return
            except _Retry as exc:
                failures += 1
                if failures >= self.options.max_attempts:
                    raise EndpointError(f"{self.options.url}: gave up after {failures} attempts ({exc.reason}); "
                                        "try again later, or check [kb] eventstreams_url") from exc
                wait = exc.wait_s if exc.wait_s is not None else self._backoff(failures)
                log.warning("stream.retry", url=self.options.url, attempt=failures, reason=exc.reason,
                            wait_s=round(wait, 3))
                self._sleep(wait)
                continue
            if got == 0:  # the server closed at once: nothing more to read
                return
            log.info("stream.reconnect", url=self.options.url, after_events=got)

    def _connection(self, last_event_id: str | None, since: str | None) -> Iterator[StreamEvent]:
        o = self.options
        url = o.url + ("?" + urllib.parse.urlencode({"since": since}) if since else "")
        headers = {"User-Agent": o.user_agent, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connections += 1
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                              timeout=o.connect_timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code in (429, 502, 503, 504):
                raise _Retry(f"HTTP {exc.code}", retry_after_seconds(exc.headers.get("Retry-After"),
                                                                     o.retry_after_max_s)) from exc
            raise EndpointError(f"{o.url}: HTTP {exc.code} {exc.reason}; check [kb] eventstreams_url") from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            raise _Retry(f"cannot connect: {getattr(exc, 'reason', exc)}") from exc
        with response:
            _set_timeout(response, o.idle_s)
            ident: str | None = None
            data: list[str] = []
            while True:
                try:
                    raw = response.readline()
                except TimeoutError:
                    raise _Idle() from None
                except (ConnectionError, OSError) as exc:  # reset mid-stream: resume from the last id
                    log.info("stream.dropped", reason=str(exc))
                    return
                if not raw:
                    return  # closed by the server
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:  # a blank line ends a frame
                    if data:
                        yield _event(ident, "\n".join(data))
                    data = []
                    continue
                if line.startswith(":"):
                    continue  # a comment (keep-alive)
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "id":
                    ident = value
                elif field == "data":
                    data.append(value)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_max_s, self.options.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


class _Idle(Exception):
    pass


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


def _event(ident: str | None, text: str) -> StreamEvent:
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    return StreamEvent(ident, data if isinstance(data, dict) else {})


def _set_timeout(response: Any, seconds: float) -> None:
    """The idle timeout applies to each read of the open stream (not only to connecting)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _moment(text: str) -> datetime:
    return parse_time(text) or LONG_AGO
