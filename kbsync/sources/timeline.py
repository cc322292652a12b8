"""Which statements of a (subject, relation) are true *now*: ranks and time qualifiers.

Wikidata keeps history as statements: ``pq:P580`` start time, ``pq:P582`` end time,
``pq:P585`` point in time, and a rank. As of a moment T, a statement is

- **current** when it is not deprecated, its end is absent or after T, and its start (or,
  without one, its point in time) is absent or not after T;
- **ended** when it is not deprecated and its end is at or before T (an end of "unknown
  value" counts as ended long ago);
- **future** when its start is after T, **deprecated** when its rank says so: neither
  kind is a target nor a stale answer (future ones are kept in ``why``, so that a reader
  knows when what is current will change without an edit).

Among current statements preferred rank beats normal. A "no value" statement (Wikidata's
``novalue`` snak, ``wdno:`` in RDF; ``NO_VALUE`` here) takes part like any value: when it
wins (a preferred "no value": the office is vacant) nothing is current, ``Resolution.none``
is true, and the holders it pushed aside are stale (superseded), never a target. An end
that cannot be read (an impossible day) is an unknown end: ended, no one knows when
(``LONG_AGO``, ``"unknown"`` in ``why``); a start or point in time that cannot be read is an
unknown start: not begun (``FAR_FUTURE``), never current (`qualifier_moment`); the readers log
and count both. A single-valued relation keeps one
value, the one that started latest (no start: earliest; equal starts: the smallest id);
the others are *superseded* from the winner's start on. A multi-valued relation keeps every
current value; its edit target is the one that started most recently. Ended and
superseded values are *stale*: the answers a sync exists to correct.

Dates: Wikidata's JSON writes a year-precision date ``+2014-00-00T00:00:00Z``; its RDF
writes ``"2014-01-01T00:00:00Z"^^xsd:dateTime``. Both (and ``-00`` forms in literals) are
read as the first moment of the period they name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

DEPRECATED, NORMAL, PREFERRED = 0, 1, 2
RANK_NAMES = {DEPRECATED: "deprecated", NORMAL: "normal", PREFERRED: "preferred"}
LONG_AGO = datetime(1, 1, 1, tzinfo=UTC)  # an "unknown value" end: ended, no one knows when
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
NO_VALUE = "(no value)"  # the value of a "no value" statement: no entity id, IRI or literal reads so

WIKIDATA_TIME = re.compile(
    r"\s*([+-]?)(\d{1,16})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*"
)


@dataclass
class Statement:
    value: str  # object id (or literal value)
    rank: int = NORMAL
    starts: list[datetime] = field(default_factory=list)
    ends: list[datetime] = field(default_factory=list)
    points: list[datetime] = field(default_factory=list)
    literal: bool = False  # the value is a literal (its own label), not an entity IRI

    @property
    def start(self) -> datetime | None:
        """The earliest start time; a point in time stands in when there is none."""
        moments = self.starts or self.points
        return min(moments) if moments else None

    @property
    def end(self) -> datetime | None:
        return max(self.ends) if self.ends else None


@dataclass(frozen=True)
class Resolution:
    current: tuple[str, ...]  # acceptable values, sorted
    target: str | None  # the value an edit teaches
    stale: tuple[str, ...]  # ended / superseded values, most recently ended first
    why: dict[str, dict[str, str | None]]  # value -> {status, rank, start, end[, next_start]};
    # status current | ended | superseded | future (not yet started: neither a target nor
    # stale); next_start: a stale value's later term that has not started yet

    @property
    def none(self) -> bool:
        """The KB says "no value" now (a vacant office): nothing to teach, the old holder to review."""
        return self.why.get(NO_VALUE, {}).get("status") == "current"


def parse_time(text: str) -> datetime | None:
    """A Wikidata or xsd:dateTime lexical form -> UTC datetime (month/day 00 -> 1); None if not one."""
    m = WIKIDATA_TIME.fullmatch(text)
    if m is None:
        return None
    sign, year, month, day, hour, minute, second, zone = m.groups()
    y = int(year) * (-1 if sign == "-" else 1)
    if y < 1:
        return LONG_AGO
    if y > 9999:
        return FAR_FUTURE
    try:
        moment = datetime(y, max(int(month), 1), max(int(day), 1), int(hour or 0), int(minute or 0),
                          int(second or 0), tzinfo=UTC)
    except ValueError:
        return None
    if zone and zone != "Z":
        sign_z = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign_z * (int(digits[:2]) * 60 + int(digits[2:]))
        moment -= timedelta(minutes=offset)
    return moment


QUALIFIER_ROLES = {"P580": "start", "P582": "end", "P585": "point"}


def qualifier_moment(text: str, role: str) -> tuple[datetime | None, bool]:
    """(moment, unreadable) of a start/end/point qualifier's lexical form. One that cannot be read
    (an impossible day, "2024-02-31") is judged so that it can never make a statement current:
    an unknown end has ended (LONG_AGO), an unknown start or point has not begun (FAR_FUTURE)."""
    moment = parse_time(text)
    if moment is not None:
        return moment, False
    return (LONG_AGO if role == "end" else FAR_FUTURE), True


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve(statements: Iterable[Statement], as_of: datetime, single_valued: bool) -> Resolution:
    """Current values, the edit target and the stale values of one (subject, relation) as of `as_of`."""
    current: dict[str, Statement] = {}
    stale: dict[str, tuple[datetime, Statement, str]] = {}  # value -> (ended at, statement, status)
    future: dict[str, Statement] = {}  # starts after as_of: recorded so a later read is due then
    for st in statements:
        if st.rank == DEPRECATED:
            continue
        if st.end is not None and st.end <= as_of:
            _keep_latest(stale, st.value, (st.end, st, "ended"))
        elif st.start is None or st.start <= as_of:
            best = current.get(st.value)
            if best is None or (st.rank, _start_key(st)) > (best.rank, _start_key(best)):
                current[st.value] = st
        elif st.value not in future or _start_key(st) < _start_key(future[st.value]):
            future[st.value] = st
    if current:
        top = max(st.rank for st in current.values())
        vacant = NO_VALUE in current and current[NO_VALUE].rank == top
        for value, st in list(current.items()):
            if st.rank < top:  # a normal value beside a preferred one: not the truth, not ended
                del current[value]
                if vacant:  # ... unless the preferred one says "no value": then it was the holder
                    _keep_latest(stale, value, (current[NO_VALUE].start or LONG_AGO, st, "superseded"))
    order = _latest_first({v: _start_key(st) for v, st in current.items()})
    target = current[order[0]] if order else None
    if single_valued and target is not None:
        for value in order[1:]:
            superseded_at = target.start or LONG_AGO
            _keep_latest(stale, value, (superseded_at, current.pop(value), "superseded"))
    if NO_VALUE in current and len(current) > 1:  # a real value beside "no value" (multi-valued)
        del current[NO_VALUE]
    stale.pop(NO_VALUE, None)  # "no value" is never an answer to correct
    for value in current:
        stale.pop(value, None)  # a value that holds again (a second term) is not stale
    why = {v: _why("future", st) for v, st in future.items() if v not in current and v not in stale}
    why |= {v: _why("current", st) for v, st in current.items()}
    stale_order = _latest_first({v: entry[0] for v, entry in stale.items()})
    for value in stale_order:
        _, st, status = stale[value]
        why[value] = _why(status, st)
        if value in future:  # a later term that has not started: the marker a later read is due by
            why[value]["next_start"] = iso(future[value].start)
    values = tuple(sorted(v for v in current if v != NO_VALUE))
    return Resolution(
        current=values,
        target=None if target is None or target.value == NO_VALUE else target.value,
        stale=tuple(stale_order),
        why=dict(sorted(why.items())),
    )


def _keep_latest(stale: dict[str, tuple[datetime, Statement, str]], value: str,
                 entry: tuple[datetime, Statement, str]) -> None:
    if value not in stale or entry[0] > stale[value][0]:
        stale[value] = entry


def _start_key(st: Statement) -> datetime:
    return st.start or LONG_AGO


def _latest_first(moments: dict[str, datetime]) -> list[str]:
    """Values by moment, latest first; equal moments: the smallest value first (deterministic)."""
    return sorted(sorted(moments), key=lambda v: moments[v], reverse=True)


def _why(status: str, st: Statement) -> dict[str, str | None]:
    end = "unknown" if st.end == LONG_AGO else iso(st.end)
    return {"status": status, "rank": RANK_NAMES[st.rank], "start": iso(st.start), "end": end}


def due(why: dict[str, dict[str, str | None]], last: datetime, now: datetime) -> bool:
    """Whether what is current changes between `last` and `now` by time alone: a current
    value's end, a future value's start or a stale value's next term falls in (last, now]."""
    for entry in why.values():
        moment = entry["end"] if entry["status"] == "current" else entry["start"] if entry["status"] == "future" else None
        for text in (moment, entry.get("next_start")):
            when = parse_time(text) if text else None
            if when is not None and last < when <= now:
                return True
    return False
