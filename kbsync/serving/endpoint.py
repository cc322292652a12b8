"""An OpenAI-compatible `/v1/completions` client for probing a served model (vLLM, SGLang,
llama.cpp's server, Ollama's OpenAI API): greedy, temperature 0, logprobs where given.

    client = CompletionsClient(["http://a:8000/v1/completions", "http://b:8000"], concurrency=8)
    client.complete_all(prompts, max_tokens=8) -> [Completion(text, token_logprobs)]

- Replicas take requests in turn; a retry goes to the next replica.
- `concurrency` requests in flight at once (threads: the work is the server's).
- Each request has a timeout; a connection error, a timeout, 429 or 5xx is retried up to
  `max_attempts` times with back-off doubling from 0.5 s (Retry-After honoured, capped at 30 s).
- When every attempt failed, one line names the server and the fix (ServingError).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kbsync.errors import ServingError

PATH = "/v1/completions"
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Completion:
    text: str
    token_logprobs: list[float] | None      # per generated token, where the server gives them
    tokens: list[str] | None


def completions_url(url: str) -> str:
    """A base URL ("http://host:8000", ".../v1") or the full completions URL, as the full URL."""
    url = url.rstrip("/")
    if url.endswith(PATH):
        return url
    return url + ("/completions" if url.endswith("/v1") else PATH)


class CompletionsClient:
    def __init__(self, urls: Sequence[str], *, model: str = "", concurrency: int = 4, timeout_s: float = 30.0,
                 max_attempts: int = 4, sleep: Callable[[float], None] = time.sleep) -> None:
        if not urls:
            raise ServingError("no [probe] endpoint is set; give the served model's /v1/completions URL")
        self.urls = [completions_url(u) for u in urls]
        self.model, self.concurrency, self.timeout_s = model, concurrency, timeout_s
        self.max_attempts, self.sleep = max_attempts, sleep
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def _first_replica(self) -> int:
        with self._lock:
            return next(self._turn)

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        body = {"model": self.model or "kbsync", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "top_p": 1.0, "n": 1, "stream": False, "logprobs": 1, "seed": 0,
                "n_probs": 1}   # llama.cpp reads n_probs (its /v1/completions ignores logprobs); others ignore it
        delay, last = 0.5, ""
        first = self._first_replica()  # requests take turns; this one's retries go on from its own turn
        for attempt in range(1, self.max_attempts + 1):
            url = self.urls[(first + attempt - 1) % len(self.urls)]
            try:
                return _parse(self._post(url, body), url)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace").strip()
                last = f"{url} answered HTTP {exc.code} {detail}".strip()
                if exc.code not in RETRYABLE:
                    raise ServingError(f"{last}; check [probe] endpoint and endpoint_model") from exc
                wait = _retry_after(exc.headers.get("Retry-After")) or delay
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"the served model at {url} is unreachable ({reason})"
                wait = delay
            if attempt < self.max_attempts:
                self.sleep(min(wait, 30.0))
                delay *= 2
        raise ServingError(f"{last}, {self.max_attempts} attempt(s); start the server or fix [probe] endpoint")

    def complete_all(self, prompts: Sequence[str], max_tokens: int) -> list[Completion]:
        """Every prompt's completion, in order, `concurrency` requests in flight."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self.complete(p, max_tokens), prompts))

    def _post(self, url: str, body: dict) -> dict:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read())


def _parse(data: dict, url: str) -> Completion:
    try:
        choice = data["choices"][0]
        text = str(choice["text"])
    except (KeyError, IndexError, TypeError) as exc:
        raise ServingError(f"{url} gave no completion ({str(data)[:120]}); is it an OpenAI-compatible "
                           "/v1/completions endpoint?") from exc
    lp = choice.get("logprobs") or {}
    if isinstance(lp, dict) and lp.get("token_logprobs") is not None:       # OpenAI legacy / vLLM
        return Completion(text, [float(x) for x in lp["token_logprobs"]], [str(t) for t in lp.get("tokens") or []])
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):          # llama.cpp's server
        return Completion(text, [float(t["logprob"]) for t in lp["content"]], [str(t["token"]) for t in lp["content"]])
    return Completion(text, None, None)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None
