"""The /v1/completions client's faults, against a scripted local HTTP server (fault injection:
the real engine's answers are tested against llama.cpp's server in test_llama_server.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kbsync.errors import ServingError
from kbsync.model.probe import ProbeItem
from kbsync.serving.endpoint import CompletionsClient, completions_url
from kbsync.serving.served_probe import ServedModel

Reply = tuple[int, dict, dict]   # status, headers, body


class Scripted:
    """A local server answering each POST with plan(n, body) (n counts from 1)."""

    def __init__(self, plan: Callable[[int, dict], Reply]) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                status, headers, reply = plan(len(outer.bodies), body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[int, dict], Reply]], Scripted]]:
    made: list[Scripted] = []

    def make(plan: Callable[[int, dict], Reply]) -> Scripted:
        made.append(Scripted(plan))
        return made[-1]

    yield make
    for s in made:
        s.close()


def answer(text: str, logprobs: list[float] | None = None, tokens: list[str] | None = None) -> dict:
    choice: dict = {"text": text, "index": 0, "finish_reason": "length"}
    if logprobs is not None:
        choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs}
    return {"choices": [choice]}


def test_urls() -> None:
    assert completions_url("http://h:8000") == "http://h:8000/v1/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/completions"
    assert completions_url("http://h:8000/v1/completions") == "http://h:8000/v1/completions"


def test_greedy_request_and_the_same_answer_matching(scripted) -> None:
    server = scripted(lambda n, b: (200, {}, answer(" Paris. It is", [-0.1, -0.3, -2.0], [" Paris", ".", " It"])))
    served = ServedModel("key", CompletionsClient([server.url], model="m", concurrency=2))
    got = served.probe([ProbeItem("The capital of France is", ["Paris"]),
                        ProbeItem("The capital of Italy is", ["Rome"])], max_new_tokens=6)
    assert [(r.answer, r.agrees, r.matched) for r in got] == [("Paris", True, "Paris"), ("Paris", False, None)]
    assert got[0].answer_logprob == pytest.approx(-0.1)
    body = server.bodies[0]
    assert body["temperature"] == 0 and body["max_tokens"] == 6 and body["model"] == "m" and body["logprobs"] == 1


def test_llama_cpp_logprob_shape(scripted) -> None:
    reply = {"choices": [{"text": " Rome", "logprobs": {"content": [{"token": " Rome", "logprob": -0.5}]}}]}
    server = scripted(lambda n, b: (200, {}, reply))
    got = ServedModel("k", CompletionsClient([server.url])).probe([ProbeItem("p", ["Rome"])])
    assert got[0].agrees and got[0].answer_logprob == pytest.approx(-0.5)


def test_retries_with_back_off_and_retry_after(scripted) -> None:
    plan = {1: (503, {"Retry-After": "7"}, {}), 2: (502, {}, {})}
    server = scripted(lambda n, b: plan.get(n, (200, {}, answer(" Paris"))))
    waits: list[float] = []
    client = CompletionsClient([server.url], max_attempts=4, sleep=waits.append)
    assert client.complete("p", 4).text == " Paris"
    assert waits == [7.0, 1.0]           # Retry-After honoured, then the back-off (0.5 doubled)


def test_replicas_take_turns_and_a_retry_moves_on(scripted) -> None:
    a = scripted(lambda n, b: (503, {}, {}))
    b = scripted(lambda n, body: (200, {}, answer(" ok")))
    client = CompletionsClient([a.url, b.url], concurrency=4, sleep=lambda s: None)
    assert [c.text for c in client.complete_all([f"p{i}" for i in range(6)], 2)] == [" ok"] * 6
    assert len(b.bodies) == 6 and len(a.bodies) >= 3


def test_a_retry_goes_to_the_next_replica_while_other_requests_take_turns(scripted) -> None:
    a = scripted(lambda n, b: (503, {}, {}))
    b = scripted(lambda n, body: (200, {}, answer(" ok")))
    client = CompletionsClient([a.url, b.url], max_attempts=2)
    client.sleep = lambda s: client._first_replica()  # another request takes its turn during the back-off
    assert client.complete("p", 2).text == " ok"
    assert len(a.bodies) == 1 and len(b.bodies) == 1


def test_a_server_that_is_down_is_one_line_naming_it() -> None:
    client = CompletionsClient(["http://127.0.0.1:9"], max_attempts=2, timeout_s=2, sleep=lambda s: None)
    with pytest.raises(ServingError) as err:
        client.complete("p", 2)
    text = str(err.value)
    assert "the served model at http://127.0.0.1:9/v1/completions is unreachable" in text
    assert "2 attempt(s); start the server or fix [probe] endpoint" in text and "\n" not in text


def test_a_client_error_is_not_retried(scripted) -> None:
    server = scripted(lambda n, b: (404, {}, {"error": "model not found"}))
    with pytest.raises(ServingError, match="answered HTTP 404"):
        CompletionsClient([server.url], sleep=lambda s: None).complete("p", 2)
    assert len(server.bodies) == 1


def test_not_a_completions_endpoint(scripted) -> None:
    server = scripted(lambda n, b: (200, {}, {"data": []}))
    with pytest.raises(ServingError, match="is it an OpenAI-compatible /v1/completions endpoint"):
        CompletionsClient([server.url]).complete("p", 2)


def test_diff_asks_the_endpoint_and_loads_no_model(scripted, make_settings, tmp_path, sqlite_url, monkeypatch) -> None:
    """[probe] endpoint: the diff's answers come from the server; the in-process model is never loaded."""
    from kbsync.store import db as store_db
    from kbsync.sync import from_settings

    kb = tmp_path / "kb.ttl"
    kb.write_text('@prefix wd: <http://www.wikidata.org/entity/> .\n@prefix wdt: <http://www.wikidata.org/prop/direct/> .\n'
                  '@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n'
                  'wd:Q1 rdfs:label "Atlantis"@en ; wdt:P36 wd:Q5 .\nwd:Q5 rdfs:label "Poseidonia"@en .\n'
                  'wd:Q2 rdfs:label "Lemuria"@en ; wdt:P36 wd:Q6 .\nwd:Q6 rdfs:label "Mu"@en .\n', encoding="utf-8")
    server = scripted(lambda n, b: (200, {}, answer(" Poseidonia." if "Atlantis" in b["prompt"] else " Paris.")))
    settings = make_settings(kb={"source": "rdf", "mode": "truthy", "files": [str(kb)]},
                             relations={"enabled": ["P36"]}, probe={"endpoint": server.url, "max_new_tokens": 3})
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)

    def no_model(*a, **k):
        raise AssertionError("the in-process model was loaded")

    monkeypatch.setattr(from_settings, "current_model", no_model)
    report = from_settings.diff_from_settings(settings, db, settings.state.dir, run_id="d1", full=True)
    assert (report.probed, report.agree, report.queued) == (2, 1, 1)
    assert sorted(b["prompt"] for b in server.bodies) == ["The capital of Atlantis is", "The capital of Lemuria is"]
    db.dispose()


def test_config_check_names_serve_and_endpoint_problems(run_cli, tmp_path) -> None:
    cfg = tmp_path / "kbsync.toml"
    cfg.write_text('[serve]\nreload = "vllm"\nexport = "gguf"\n[probe]\nendpoint = "localhost:8000"\n')
    r = run_cli("--config", str(cfg), "config", "check")
    assert r.exit_code == 2
    assert "[serve] reload = \"vllm\" but [serve] url is empty" in r.err
    assert "set export = \"lora\"" in r.err and "[probe] endpoint 'localhost:8000' is not an http(s) URL" in r.err
