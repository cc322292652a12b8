"""Serving the dashboard with uvicorn: in the foreground (`kbsync dashboard`) or in a thread
beside the daemon's work loop (`[dashboard] enabled`)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from kbsync.errors import ConfigError

LOOPBACK = "127.0.0.1"


def parse_bind(bind: str) -> tuple[str, int]:
    """'127.0.0.1:8765', '[::1]:8765', '0.0.0.0:8765' or ':8765' (no host: 127.0.0.1, this
    machine only) -> (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"dashboard bind {bind!r} is not host:port; e.g. 127.0.0.1:8765 or [::1]:8765")
    return host.strip("[]") or LOOPBACK, int(port)


def is_loopback(host: str) -> bool:
    """Whether an address bound to is reachable from this machine only (0.0.0.0 and :: are every address)."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def bound_socket(bind: str, *, allow_remote: bool = False) -> socket.socket:
    """A socket bound to `bind`; one reachable from other machines only with `allow_remote` (the
    dashboard can roll back a model: it must never be reachable off-host by accident)."""
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
    address = sock.getsockname()[0]         # what a host name resolved to: the real address
    if not is_loopback(address) and not allow_remote:
        sock.close()
        raise ConfigError(f"dashboard bind {bind} listens on {address}, which other machines can reach; "
                          "bind 127.0.0.1:PORT (or put a proxy in front), or pass --allow-remote "
                          "([dashboard] allow_remote) if that is what you want")
    return sock


def remote_warning(url: str) -> str:
    """The line `kbsync dashboard` prints when it listens beyond this machine ('' when it does not)."""
    host = url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    if is_loopback(host):
        return ""
    return (f"warning: the dashboard listens on {host}, reachable from other machines (--allow-remote); "
            "anyone who can reach it can read the audit trail")


def url_of(sock: socket.socket) -> str:
    """The address the socket really listens on (0.0.0.0 stays 0.0.0.0: every address)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: Starlette) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))


def serve(app: Starlette, bind: str, on_ready=None, *, allow_remote: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    sock = bound_socket(bind, allow_remote=allow_remote)
    if on_ready:
        on_ready(url_of(sock))
    _server(app).run(sockets=[sock])


class BackgroundServer:
    """The dashboard in a daemon thread; `stop()` ends it."""

    def __init__(self, app: Starlette, bind: str, *, allow_remote: bool = False) -> None:
        self.sock = bound_socket(bind, allow_remote=allow_remote)
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
