"""Local stand-ins for Wikidata's servers, replaying the shapes their documentation shows,
for kbsync's follower tests and benchmarks (issue 28). Nothing here reaches the network.

- ``recentchange(...)``: an EventStreams ``mediawiki.recentchange`` event (the fields of the
  schema at schema.wikimedia.org, mediawiki/recentchange/1.0.0), and ``event_id(...)`` the SSE
  ``id`` EventStreams sends (a JSON list of topic/partition/offset).
- ``StreamServer``: an SSE server on 127.0.0.1 that replays a sequence of events (a list, or a
  function of the offset for a day's worth without holding it): resumes from ``Last-Event-ID``
  or ``?since=``, drops the connection every ``drop_every`` events (the client reconnects),
  forgets offsets below ``retained_from`` (a gap), and after the last event keeps the connection
  open and silent, as the live stream would be between edits.
- ``ApiServer``: ``/w/api.php`` (wbgetentities, list=recentchanges) and
  ``/wiki/Special:EntityData/{id}.json`` over entities in memory (or made by a function), with
  faults injected in order: HTTP 429 with Retry-After, a ``maxlag`` error answer.
- ``entity(...)``: an item in the entity JSON shape (wbgetentities / Special:EntityData / dump).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CAL = "http://www.wikidata.org/entity/Q1985727"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recentchange(offset: int, title: str, revision: int, dt: datetime, *, wiki: str = "wikidatawiki",
                 kind: str = "edit", namespace: int = 0, topic: str = "eqiad.mediawiki.recentchange",
                 user: str = "ExampleBot") -> dict[str, Any]:
    domain = {"wikidatawiki": "www.wikidata.org", "enwiki": "en.wikipedia.org",
              "commonswiki": "commons.wikimedia.org"}.get(wiki, f"{wiki}.example")
    event: dict[str, Any] = {
        "$schema": "/mediawiki/recentchange/1.0.0",
        "meta": {"uri": f"https://{domain}/wiki/{title}", "request_id": f"req-{offset}", "id": f"evt-{offset}",
                 "dt": iso(dt), "domain": domain, "stream": "mediawiki.recentchange", "topic": topic,
                 "partition": 0, "offset": offset},
        "id": 2_000_000_000 + offset, "type": kind, "namespace": namespace, "title": title,
        "title_url": f"https://{domain}/wiki/{title}", "comment": "/* wbsetclaim-update:2||1 */",
        "timestamp": int(dt.timestamp()), "user": user, "bot": True, "server_url": f"https://{domain}",
        "server_name": domain, "server_script_path": "/w", "wiki": wiki, "parsedcomment": "",
    }
    if kind in ("edit", "new"):
        event |= {"minor": False, "patrolled": True,
                  "length": {"old": 1000, "new": 1010} if kind == "edit" else {"new": 1010},
                  "revision": {"old": revision - 1, "new": revision} if kind == "edit" else {"new": revision},
                  "notify_url": f"https://{domain}/w/index.php?diff={revision}&oldid={revision - 1}"}
    return event


def event_id(offset: int, topic: str = "eqiad.mediawiki.recentchange") -> str:
    return json.dumps([{"topic": topic, "partition": 0, "offset": offset},
                       {"topic": "codfw.mediawiki.recentchange", "partition": 0, "offset": -1}], separators=(",", ":"))


def frame(offset: int, event: dict[str, Any]) -> bytes:
    return (f"event: message\nid: {event_id(offset)}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
            ).encode()


def entity(eid: str, label: str, claims: dict[str, list[dict[str, Any]]] | None = None, *,
           aliases: Sequence[str] = (), modified: str = "2025-05-01T00:00:00Z", revision: int = 1) -> dict[str, Any]:
    return {"pageid": int(eid[1:]) % 10_000_000, "ns": 0, "title": eid, "lastrevid": revision, "modified": modified,
            "type": "item", "id": eid, "labels": {"en": {"language": "en", "value": label}},
            "descriptions": {}, "aliases": {"en": [{"language": "en", "value": a} for a in aliases]} if aliases else {},
            "claims": claims or {}, "sitelinks": {}}


def item_claim(eid: str, prop: str, value: str, n: int, *, rank: str = "normal", start: str | None = None,
               end: str | None = None) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "mainsnak": {"snaktype": "value", "property": prop, "datatype": "wikibase-item",
                     "datavalue": {"value": {"entity-type": "item", "numeric-id": int(value[1:]), "id": value},
                                   "type": "wikibase-entityid"}},
        "type": "statement", "id": f"{eid}$00000000-0000-0000-0000-{n:012d}", "rank": rank, "references": []}
    qualifiers = {}
    for qprop, t in (("P580", start), ("P582", end)):
        if t:
            qualifiers[qprop] = [{"snaktype": "value", "property": qprop, "datatype": "time",
                                  "datavalue": {"value": {"time": t, "timezone": 0, "before": 0, "after": 0,
                                                          "precision": 11, "calendarmodel": CAL}, "type": "time"}}]
    if qualifiers:
        claim["qualifiers"], claim["qualifiers-order"] = qualifiers, list(qualifiers)
    return claim


class _Threaded:
    server: ThreadingHTTPServer

    def start(self) -> None:
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


@dataclass
class StreamServer(_Threaded):
    count: int                                     # events in the replay
    event_at: Callable[[int], dict[str, Any]]      # offset -> event
    drop_every: int | None = None                  # close the connection after this many events
    retained_from: int = 0                         # offsets below are no longer kept
    idle_s: float = 30.0                           # silence after the last event before closing
    start_at_end: bool = True                      # no Last-Event-ID nor since: stream from now (the end)
    pace_s: float = 0.0                            # a pause after each event (a stream that takes its time)
    connections: list[dict[str, str]] = field(default_factory=list)  # each request's Last-Event-ID / since
    sent: int = 0
    high_water: int = -1                           # the highest offset ever sent: "now" in the replay

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                last = self.headers.get("Last-Event-ID")
                since = query.get("since", [None])[0]
                outer.connections.append({"last_event_id": last or "", "since": since or "",
                                          "user_agent": self.headers.get("User-Agent", "")})
                start = outer.resume_at(last, since)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    self.wfile.write(b":ok\n\n")
                    sent = 0
                    for offset in range(start, outer.count):
                        self.wfile.write(frame(offset, outer.event_at(offset)))
                        outer.sent += 1
                        outer.high_water = max(outer.high_water, offset)
                        if outer.pace_s:
                            self.wfile.flush()
                            time.sleep(outer.pace_s)
                        sent += 1
                        if outer.drop_every and sent >= outer.drop_every and offset + 1 < outer.count:
                            return  # a dropped connection: the client resumes from the last id
                    self.wfile.flush()
                    time.sleep(outer.idle_s)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def resume_at(self, last: str | None, since: str | None) -> int:
        if last:
            offset = max(int(p.get("offset", -1)) for p in json.loads(last))
            return max(offset + 1, self.retained_from)
        if since:
            dts = _DtIndex(self)
            return max(bisect.bisect_left(dts, since), self.retained_from)
        return self.count if self.start_at_end else self.retained_from


class _DtIndex(Sequence[str]):
    """The events' meta.dt by offset, for bisect (replays are in time order but for a few swaps)."""

    def __init__(self, server: StreamServer):
        self.server = server

    def __len__(self) -> int:
        return self.server.count

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self.server.event_at(i)["meta"]["dt"]


@dataclass
class ApiServer(_Threaded):
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    make_entity: Callable[[str], dict[str, Any] | None] | None = None   # instead of `entities`
    changes: list[dict[str, Any]] = field(default_factory=list)          # RecentChanges, oldest first
    faults: list[str] = field(default_factory=list)                      # "429" | "maxlag", served in order
    retry_after: str = "0"
    requests: list[str] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                outer.user_agents.add(self.headers.get("User-Agent", ""))
                if outer.faults:
                    fault = outer.faults.pop(0)
                    if fault == "429":
                        return self.answer(429, {"error": "too many requests"}, {"Retry-After": outer.retry_after})
                    if fault == "maxlag":
                        return self.answer(200, {"error": {"code": "maxlag", "info": "Waiting for 10.64.48.35: "
                                                           "6.2 seconds lagged.", "host": "10.64.48.35", "lag": 6.2,
                                                           "type": "db"}},
                                           {"Retry-After": outer.retry_after, "X-Database-Lag": "6"})
                parts = urllib.parse.urlsplit(self.path)
                if parts.path.startswith("/wiki/Special:EntityData/"):
                    eid = parts.path.rsplit("/", 1)[-1].removesuffix(".json")
                    found = outer.lookup(eid)
                    if found is None:
                        return self.answer(404, {"error": "not found"})
                    return self.answer(200, {"entities": {eid: found}})
                query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
                if query.get("action") == "wbgetentities":
                    ids = query["ids"].split("|")
                    assert len(ids) <= 50, "wbgetentities takes up to 50 ids"
                    out: dict[str, Any] = {}
                    for eid in ids:
                        found = outer.lookup(eid)
                        if found is None:
                            out[eid] = {"id": eid, "missing": ""}
                        elif "claims" not in query.get("props", "claims"):
                            out[eid] = {k: v for k, v in found.items() if k != "claims"}
                        else:
                            out[eid] = found
                    return self.answer(200, {"entities": out, "success": 1})
                if query.get("action") == "query" and query.get("list") == "recentchanges":
                    return self.answer(200, outer.recent(query))
                return self.answer(400, {"error": {"code": "badvalue", "info": "unknown request"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def lookup(self, eid: str) -> dict[str, Any] | None:
        return self.make_entity(eid) if self.make_entity else self.entities.get(eid)

    def recent(self, query: dict[str, str]) -> dict[str, Any]:
        start, end = query.get("rcstart", ""), query.get("rcend", "9999")
        chosen = [c for c in self.changes if start <= c["timestamp"] <= end]
        first = int(query.get("rccontinue", "0") or 0)
        limit = int(query.get("rclimit", "500"))
        page = chosen[first:first + limit]
        out: dict[str, Any] = {"batchcomplete": "", "query": {"recentchanges": page}}
        if first + limit < len(chosen):
            out["continue"] = {"rccontinue": str(first + limit), "continue": "-||"}
        return out

    @property
    def api_url(self) -> str:
        return self.base + "/w/api.php"

    @property
    def entity_url(self) -> str:
        return self.base + "/wiki/Special:EntityData/{id}.json"
