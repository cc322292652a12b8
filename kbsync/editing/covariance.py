"""Second moments C_l = E[k k^T] of the keys at each edited layer, over a text corpus.

Convention: uncentred and *mean-normalised* (C = sum over tokens of k k^T / number of tokens,
ROME's ``SecondMoment.moment()``), so cov_lambda is on the scale of the public lambda = 15000.
All layers are read in one pass (one forward per batch, a hook on every edited layer), summed in
float64, and cached as safetensors under cache_dir keyed by (model identity, layer, corpus
identity, n_samples): a file name holds short hashes of all four.

Corpora (each has an ``identity`` and ``texts()``): text files (a document per blank-line
separated paragraph, or per line), JSONL (a "text" field), a Hugging Face dataset (online only),
and text the model writes itself from a fixed seed, the offline default that needs nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from kbsync.durable import durable_file
from kbsync.editing.stats_cache import cache_path
from kbsync.errors import ConfigError, StateError
from kbsync.logs import get_logger
from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.hooks import TraceDict
from kbsync.model.tokens import pad_id_of
from kbsync.model.weights import weights_sha256

log = get_logger(__name__)
__all__ = ["Corpus", "HFDatasetCorpus", "JsonlCorpus", "ModelSampleCorpus", "PassClock", "TextFileCorpus",
           "cache_path", "samples_for", "second_moments"]


class Corpus(Protocol):
    identity: str

    def texts(self) -> Iterator[str]: ...


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass
class TextFileCorpus:
    path: Path
    per: str = "auto"  # "paragraph" (blank-line separated) | "line" | "auto" (paragraphs if any)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise ConfigError(f"corpus file {self.path} does not exist; give a text file path")
        if self.per not in ("paragraph", "line", "auto"):
            raise ConfigError(f"corpus split {self.per!r} is unknown; use 'paragraph', 'line' or 'auto'")
        if self.per == "auto":
            self.per = "paragraph" if "\n\n" in self.path.read_text(encoding="utf-8", errors="replace") else "line"
        self.identity = f"text:{self.per}:{_sha(self.path.read_bytes())}"

    def texts(self) -> Iterator[str]:
        raw = self.path.read_text(encoding="utf-8", errors="replace")
        parts = raw.split("\n\n") if self.per == "paragraph" else raw.splitlines()
        yield from (p.strip() for p in parts if p.strip())

    def count(self) -> int:
        return sum(1 for _ in self.texts())


@dataclass
class JsonlCorpus:
    path: Path
    field: str = "text"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise ConfigError(f"corpus file {self.path} does not exist; give a JSONL file path")
        self.identity = f"jsonl:{self.field}:{_sha(self.path.read_bytes())}"

    def texts(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line).get(self.field)
                except (json.JSONDecodeError, AttributeError) as exc:
                    raise ConfigError(f"{self.path}:{n} is not a JSON object; fix the line or the file") from exc
                if isinstance(value, str) and value.strip():
                    yield value

    def count(self) -> int:
        return sum(1 for _ in self.texts())


@dataclass
class HFDatasetCorpus:
    name: str
    config: str | None = None
    split: str = "train"
    field: str = "text"

    def __post_init__(self) -> None:
        self.identity = f"hf:{self.name}:{self.config}:{self.split}:{self.field}"

    def texts(self) -> Iterator[str]:
        try:
            import datasets  # optional; only for online use
        except ImportError as exc:
            raise ConfigError(f"corpus hf:{self.name} needs the 'datasets' package; install it or use a "
                              "text/JSONL corpus or the model-sample corpus") from exc
        try:
            ds = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as exc:  # offline, unknown name, ...
            raise ConfigError(f"cannot open Hugging Face dataset {self.name!r} ({type(exc).__name__}); "
                              "offline, use a text/JSONL corpus or the model-sample corpus") from exc
        for row in ds:
            if isinstance(row.get(self.field), str) and row[self.field].strip():
                yield row[self.field]


# Texts sampled together. On 2 CPU cores (SmolLM2-135M, 64 tokens a text, fp32) 32 give 2.4
# texts/s, 128 give 3.6 and 256 give 3.2; llama-server on the same GGUF with 32 slots gives 3.7:
# at 128 the pass is bound by the cores' arithmetic (~230 tokens/s), not by generate's overhead.
SAMPLE_BATCH = 128


@dataclass
class ModelSampleCorpus:
    """Text the model writes itself: batched sampling from short starters, fixed seed."""

    model: Any  # a causal LM (transformers' types are not precise enough for mypy here)
    tokenizer: Any
    seed: int = 0
    n_tokens: int = 64
    batch_size: int = SAMPLE_BATCH
    top_k: int = 50

    STARTERS = ("The", "In", "A", "It", "He", "She", "This", "After", "When", "According to")

    def __post_init__(self) -> None:
        self.identity = (f"model-samples:seed={self.seed}:tokens={self.n_tokens}:top_k={self.top_k}"
                         f":batch={self.batch_size}")

    @torch.no_grad()
    def texts(self) -> Iterator[str]:
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        gen = torch.Generator().manual_seed(self.seed)
        starter_ids = [tok(s, add_special_tokens=False)["input_ids"][:1] for s in self.STARTERS]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        while True:
            pick = torch.randint(len(starter_ids), (self.batch_size,), generator=gen)
            ids = torch.tensor([bos + starter_ids[int(j)] for j in pick], device=device)  # (b, 1 or 2)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                          top_k=self.top_k, max_new_tokens=self.n_tokens,
                                          pad_token_id=pad_id_of(tok))
            yield from tok.batch_decode(out, skip_special_tokens=True)


def samples_for(corpus: Corpus, n_samples: int) -> int:
    """The texts a pass reads: n_samples, or all a finite corpus has when it has fewer."""
    count = getattr(corpus, "count", None)
    return min(n_samples, count()) if count is not None else n_samples


class PassClock:
    """Rate and time left of a key-statistics pass, measured from its start; `estimate` once the
    first `first` texts are done (the first batch of model-written text included)."""

    def __init__(self, total: int, first: int = 32, clock: Callable[[], float] = time.monotonic):
        self.total, self.first, self._clock = total, min(first, total), clock
        self.start, self.done = clock(), 0

    def update(self, done: int) -> None:
        self.done = done

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self.start

    @property
    def rate(self) -> float:
        """Texts per second so far."""
        return self.done / max(self.elapsed_s, 1e-9)

    @property
    def eta_s(self) -> float:
        return (self.total - self.done) / max(self.rate, 1e-9)

    @property
    def measured(self) -> bool:
        return self.done >= self.first > 0

    def estimate(self) -> str:
        """One line: the measured rate and how long the whole pass takes at it."""
        total_s = self.total / max(self.rate, 1e-9)
        return (f"{self.rate:.2f} texts/s measured on the first {self.done}: the pass of {self.total} texts takes "
                f"about {duration(total_s)} ({duration(self.eta_s)} left)")


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def second_moments(model, tokenizer, adapter: ArchitectureAdapter, layers, corpus: Corpus, n_samples: int,
                   cache_dir: Path, progress: Callable[[int, int], None] | None = None, *,
                   model_identity: str | None = None, max_length: int = 128,
                   batch_size: int = 16, check_stop: Callable[[], None] | None = None) -> dict[int, torch.Tensor]:
    """{layer: C (d_in, d_in) float64}; from cache_dir when there, else one pass over the corpus."""
    if not isinstance(model, torch.nn.Module):  # a LoadedModel
        model_identity, model = model_identity or model.identity, model.model
    identity = model_identity or weights_sha256(model)  # a LoadedModel's identity is cached; this is not
    layers = sorted(set(int(x) for x in layers))
    wanted, n_samples = n_samples, samples_for(corpus, n_samples)
    if n_samples < wanted:
        log.info("stats.corpus_short", corpus=corpus.identity, texts=n_samples, cov_samples=wanted,
                    note="the key statistics use every text the corpus has")
    paths = {layer: cache_path(cache_dir, identity, layer, corpus.identity, n_samples) for layer in layers}
    out: dict[int, torch.Tensor] = {}
    for layer, path in paths.items():
        if path.is_file():
            try:
                out[layer] = load_file(str(path))["mom2"]
            except Exception as exc:  # safetensors raises several types
                raise StateError(f"covariance cache {path} is unreadable ({exc}); delete it to recompute") from exc
    todo = [layer for layer in layers if layer not in out]
    if todo:
        sums, count = _accumulate(model, tokenizer, adapter, todo, corpus, n_samples, max_length,
                                  batch_size, progress, check_stop)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for layer in todo:
            out[layer] = sums[layer] / count
            meta = {"model": identity, "layer": str(layer), "corpus": corpus.identity,
                    "n_samples": str(n_samples), "n_tokens": str(count), "convention": "mean E[k k^T]"}
            with durable_file(paths[layer]) as tmp:
                save_file({"mom2": out[layer].contiguous()}, str(tmp), metadata=meta)
    return out


@torch.no_grad()
def _accumulate(model, tokenizer, adapter, layers, corpus, n_samples, max_length, batch_size, progress,
                check_stop=None):
    device = next(model.parameters()).device
    names = [adapter.mlp_out_name(layer) for layer in layers]
    sums: dict[int, torch.Tensor] = {}
    count, seen = 0, 0
    texts = corpus.texts()
    pad = pad_id_of(tokenizer)
    while seen < n_samples:
        if check_stop is not None:
            check_stop()  # may raise: nothing is cached until the pass is complete
        chunk = [t for _, t in zip(range(min(batch_size, n_samples - seen)), texts, strict=False)]
        if not chunk:
            break
        seen += len(chunk)
        enc = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in chunk]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1
        with TraceDict(model, names, retain_input=True, retain_output=False, stop=True) as td:
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        real = mask.bool().to(device)
        for layer, name in zip(layers, names, strict=True):
            k = td[name].input[real].double()  # (tokens, d_in)
            kkt = k.T @ k  # (d_in, d_in)
            sums[layer] = kkt if layer not in sums else sums[layer] + kkt
        count += int(real.sum())
        if progress is not None:
            progress(seen, n_samples)
    if count == 0:
        raise ConfigError(f"corpus {corpus.identity} has no text; give a corpus with documents in it")
    return sums, count
