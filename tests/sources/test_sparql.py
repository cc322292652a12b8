"""The SPARQL endpoint source against a real Oxigraph server (and fault-injecting proxies)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from kbsync.errors import ConfigError, EndpointError
from kbsync.sources.catalogue import load_catalogue
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource, retry_after_seconds
from kbsync.sources.subjects import SubjectSelection

from .conftest import KNOWN1000, RANKS, UA, free_port

HTML = (
    200,
    {"Content-Type": "text/html; charset=utf-8"},
    b"<!doctype html><html><body>Welcome</body></html>",
)


def endpoint(url: str, **options) -> SparqlEndpointSource:
    read = {
        k: options.pop(k)
        for k in ("mode", "language", "page_size", "list_page_size", "selection")
        if k in options
    }
    opts = EndpointOptions(
        url=url, user_agent=UA, **{"backoff_s": 0.01, "max_attempts": 3, **options}
    )
    return SparqlEndpointSource(opts, options=ReadOptions(**read))


@pytest.mark.parametrize("mode", ["truthy", "statements"])
def test_endpoint_and_files_give_identical_facts(oxigraph_kb, mode):
    relations = load_catalogue().ids()
    # small pages: VALUES batches of 97 subjects, subject lists paged by LIMIT/OFFSET 500
    remote = endpoint(oxigraph_kb.query_url, mode=mode, page_size=97, list_page_size=500).read_all(
        relations
    )
    local = RdfFileSource(
        [KNOWN1000, RANKS], engine="oxigraph", options=ReadOptions(mode=mode)
    ).read_all(relations)
    assert len(local) == 1209 + (5 if mode == "truthy" else 6)
    key = lambda f: (f.subject, f.relation)  # noqa: E731  # a read comes in no particular order
    assert sorted(remote, key=key) == sorted(local, key=key)


def test_endpoint_ranks_and_languages(oxigraph_kb):
    facts = {
        (f.subject, f.relation): f
        for f in endpoint(oxigraph_kb.query_url, mode="statements").read_all(
            ["P36", "P463"], subjects=["Q142", "Q183", "Q39", "Q11", "Q30"]
        )
    }
    assert facts["Q142", "P36"].objects == ("Q90",)
    assert facts["Q183", "P36"].objects == ("Q64",)
    assert facts["Q39", "P36"].objects == ("Q70",)
    assert ("Q11", "P36") not in facts
    assert facts["Q30", "P463"].object_aliases == {
        "Q1065": ("UN",),
        "Q7184": ("North Atlantic Treaty Organization",),
    }
    fr = endpoint(oxigraph_kb.query_url, language="fr").read_all(["P463"], subjects=["Q30"])
    assert [(f.subject_label, f.subject_aliases) for f in fr] == [("États-Unis", ("É.-U.",))]


def test_selector_over_the_endpoint(oxigraph_kb):
    selection = SubjectSelection.from_config(["?item wdt:P463 wd:Q7184 ."])
    facts = endpoint(oxigraph_kb.query_url, selection=selection).read_all(["P36", "P463"])
    assert [(f.subject, f.relation) for f in facts] == [("Q30", "P36"), ("Q30", "P463")]


def test_incremental_read_sees_only_modified_subjects(fresh_oxigraph):
    source = endpoint(fresh_oxigraph.query_url, mode="statements")
    now = datetime.now(UTC).replace(microsecond=0)
    assert source.read_all(["P36", "P37"], since=now) == []
    fresh_oxigraph.update(
        "PREFIX wd: <http://www.wikidata.org/entity/> PREFIX schema: <http://schema.org/> "
        "PREFIX xsd: <http://www.w3.org/2001/XMLSchema#> "
        "DELETE { wd:Q142 schema:dateModified ?old } "
        f'INSERT {{ wd:Q142 schema:dateModified "{now:%Y-%m-%dT%H:%M:%SZ}"^^xsd:dateTime }} '
        "WHERE { wd:Q142 schema:dateModified ?old }"
    )
    facts = source.read_all(["P36", "P37"], since=now - timedelta(minutes=1))
    assert [(f.subject, f.relation) for f in facts] == [("Q142", "P36"), ("Q142", "P37")]
    assert facts[0].revision == f"{now:%Y-%m-%dT%H:%M:%SZ}"
    # the overlap window (10 min) still covers an edit made 5 minutes before `since`
    assert len(source.read_all(["P36"], since=now + timedelta(minutes=5))) == 1
    assert source.read_all(["P36"], since=now + timedelta(minutes=11)) == []


def test_rate_limited_endpoint_waits_retry_after_then_succeeds(oxigraph_kb, fake_http):
    limited = fake_http(
        lambda n: (429, {"Retry-After": "1"}, b"slow down") if n < 2 else None,
        oxigraph_kb.query_url,
    )
    start = time.monotonic()
    facts = endpoint(limited.url).read_all(["P36"], subjects=["Q142"])
    elapsed = time.monotonic() - start
    assert [f.objects for f in facts] == [("Q90",)]
    assert elapsed >= 2.0  # two Retry-After: 1
    assert limited.times[1] - limited.times[0] >= 1.0 and limited.times[2] - limited.times[1] >= 1.0
    assert all(r["User-Agent"] == UA for r in limited.requests)


def test_retry_after_as_http_date(oxigraph_kb, fake_http):
    def plan(n):
        if n:
            return None
        moment = datetime.now(UTC) + timedelta(seconds=2)
        return 503, {"Retry-After": moment.strftime("%a, %d %b %Y %H:%M:%S GMT")}, b""

    limited = fake_http(plan, oxigraph_kb.query_url)
    assert len(endpoint(limited.url).read_all(["P36"], subjects=["Q142"])) == 1
    assert limited.times[1] - limited.times[0] >= 1.0  # HTTP dates have whole seconds


def test_always_limited_endpoint_gives_up_after_max_attempts(fake_http):
    busy = fake_http(lambda n: (429, {}, b"") if n % 2 else (503, {}, b"busy"))
    with pytest.raises(EndpointError) as info:
        endpoint(busy.url, max_attempts=4).read_all(["P36"], subjects=["Q142"])
    assert len(busy.requests) == 4
    assert f"{busy.url}: gave up after 4 attempts (HTTP 429)" in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_html_page_is_not_an_endpoint(fake_http):
    page = fake_http(lambda n: HTML)
    with pytest.raises(
        EndpointError, match=r"answered text/html, not SPARQL JSON results; set \[kb\] endpoint"
    ):
        endpoint(page.url).read_all(["P36"], subjects=["Q142"])
    assert len(page.requests) == 1  # no retries for a wrong URL


def test_not_found_refused_and_bad_query(oxigraph_kb):
    with pytest.raises(
        EndpointError, match=r"nothing-here: HTTP 404 Not Found.*; check \[kb\] endpoint"
    ):
        endpoint(oxigraph_kb.base + "/nothing-here").read_all(["P36"], subjects=["Q142"])
    refused = f"http://127.0.0.1:{free_port()}/sparql"
    with pytest.raises(
        EndpointError, match=r"gave up after 2 attempts \(cannot connect: .*refused"
    ):
        endpoint(refused, max_attempts=2).read_all(["P36"], subjects=["Q142"])
    broken = SubjectSelection.from_config(["?item wdt:P36 ?x . FILTER("])
    with pytest.raises(EndpointError, match="HTTP 400"):
        endpoint(oxigraph_kb.query_url, selection=broken).read_all(["P36"])


def test_slow_endpoint_times_out(fake_http):
    def plan(n):
        time.sleep(1.0)
        return HTML

    slow = fake_http(plan)
    with pytest.raises(EndpointError, match=r"gave up after 2 attempts \(no answer within 0.3 s\)"):
        endpoint(slow.url, timeout_s=0.3, max_attempts=2).read_all(["P36"], subjects=["Q142"])


def test_endpoint_settings_are_checked():
    with pytest.raises(ConfigError, match="no contact"):
        SparqlEndpointSource(
            EndpointOptions(url="https://query.wikidata.org/sparql", user_agent="kbsync")
        )
    with pytest.raises(ConfigError, match="not an http"):
        SparqlEndpointSource(EndpointOptions(url="query.wikidata.org", user_agent=UA))


def test_retry_after_values():
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert retry_after_seconds("3", 600) == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", 600, now) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", 600, now) == 0.0
    assert retry_after_seconds("86400", 600) == 600.0
    assert retry_after_seconds("soon", 600) is None
    assert retry_after_seconds(None, 600) is None
