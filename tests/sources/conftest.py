"""A real Oxigraph SPARQL server (the `oxigraph` PyPI package's executable) and small HTTP
servers in threads (a fault-injecting proxy in front of it, an HTML page) for source tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
KNOWN1000 = DATA / "known1000.ttl"
RANKS = DATA / "ranks.ttl"
LEADERS = DATA / "leaders.ttl"
UA = "kbsync-tests/0 (https://example.org/kbsync; tests@example.org)"


def oxigraph_executable() -> str:
    beside = Path(sys.executable).parent / "oxigraph"
    found = str(beside) if beside.is_file() else shutil.which("oxigraph")
    if not found:
        pytest.fail("the oxigraph executable is missing: pip install oxigraph (a test dependency)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OxigraphServer:
    process: subprocess.Popen
    base: str  # http://127.0.0.1:PORT

    @property
    def query_url(self) -> str:
        return self.base + "/query"

    def update(self, text: str) -> None:
        data = urllib.parse.urlencode({"update": text}).encode()
        urllib.request.urlopen(
            urllib.request.Request(self.base + "/update", data=data), timeout=10
        ).read()


def start_oxigraph(directory: Path, files: list[Path]) -> OxigraphServer:
    exe, location = oxigraph_executable(), directory / "oxigraph-db"
    load = [exe, "load", "--location", str(location), "--file", *map(str, files)]
    subprocess.run(load, check=True, capture_output=True, timeout=60)
    port = free_port()
    process = subprocess.Popen(
        [exe, "serve", "--location", str(location), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = OxigraphServer(process, f"http://127.0.0.1:{port}")
    ask = server.query_url + "?" + urllib.parse.urlencode({"query": "ASK {}"})
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"oxigraph serve exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            urllib.request.urlopen(ask, timeout=2).read()
            return server
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                stop_oxigraph(server)
                raise RuntimeError("oxigraph serve did not answer within 30 s") from None
            time.sleep(0.05)


def stop_oxigraph(server: OxigraphServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def oxigraph_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OxigraphServer]:
    """Read-only server holding known1000.ttl and ranks.ttl."""
    server = start_oxigraph(tmp_path_factory.mktemp("oxigraph"), [KNOWN1000, RANKS])
    yield server
    stop_oxigraph(server)


@pytest.fixture
def fresh_oxigraph(tmp_path: Path) -> Iterator[OxigraphServer]:
    """A server of its own (ranks.ttl) that a test may change with SPARQL UPDATE."""
    server = start_oxigraph(tmp_path, [RANKS])
    yield server
    stop_oxigraph(server)


Reply = tuple[int, dict[str, str], bytes]  # status, headers, body


@dataclass
class FakeHttp:
    """An HTTP server in a thread; `plan(n)` answers request n (0-based), or None to proxy upstream."""

    plan: Callable[[int], Reply | None]
    upstream: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _answer(self, body: bytes) -> None:
                n = len(fake.requests)
                fake.requests.append(dict(self.headers))
                fake.times.append(time.monotonic())
                reply = fake.plan(n) or fake._proxy(self.path, dict(self.headers), body)
                status, headers, payload = reply
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up (timeout tests) breaks the pipe; not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/query"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _proxy(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        assert self.upstream, "no upstream to proxy to"
        keep = {
            k: v
            for k, v in headers.items()
            if k.lower() in ("content-type", "accept", "user-agent")
        }
        request = urllib.request.Request(self.upstream, data=body or None, headers=keep)
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, {"Content-Type": r.headers["Content-Type"]}, r.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_http() -> Iterator[Callable[..., FakeHttp]]:
    made: list[FakeHttp] = []

    def make(plan: Callable[[int], Reply | None], upstream: str | None = None) -> FakeHttp:
        made.append(FakeHttp(plan, upstream))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture(scope="session")
def leaders_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OxigraphServer]:
    """Read-only server holding leaders.ttl (time-qualified statements)."""
    server = start_oxigraph(tmp_path_factory.mktemp("oxigraph-leaders"), [LEADERS])
    yield server
    stop_oxigraph(server)
