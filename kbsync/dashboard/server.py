"""Serving the dashboard with uvicorn: in the foreground (`kbsync dashboard`) or in a thread
beside the daemon's work loop (`[dashboard] enabled`)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from kbsync.errors import ConfigError


def parse_bind(bind: str) -> tuple[str, int]:
    """'127.0.0.1:8765', '[::1]:8765' or ':8765' (all interfaces) -> (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"dashboard bind {bind!r} is not host:port; e.g. 127.0.0.1:8765 or [::1]:8765")
    return host.strip("[]") or "0.0.0.0", int(port)


def bound_socket(bind: str) -> socket.socket:
    host, port = parse_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve the dashboard on {bind} ({exc.strerror}); "
                          "choose another --bind or [dashboard] bind") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: Starlette) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))


def serve(app: Starlette, bind: str, on_ready=None) -> None:  # type: ignore[no-untyped-def]
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    sock = bound_socket(bind)
    if on_ready:
        on_ready(url_of(sock))
    _server(app).run(sockets=[sock])


class BackgroundServer:
    """The dashboard in a daemon thread; `stop()` ends it."""

    def __init__(self, app: Starlette, bind: str) -> None:
        self.sock = bound_socket(bind)
        self.url = url_of(self.sock)
        self.server = _server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="kbsync-dashboard", daemon=True)

    def start(self, wait_s: float = 10.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + wait_s
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
