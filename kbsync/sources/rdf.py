"""Local RDF files as a knowledge source, read in process with rdflib or pyoxigraph.

Formats by extension: .ttl Turtle, .nt N-Triples, .n3 N3, .rdf/.owl/.xml RDF/XML,
.jsonld/.json JSON-LD, each optionally .gz. ``builtin:NAME`` names a KB shipped in
``kbsync/data`` (NAME.ttl or NAME.ttl.gz). Both engines run the same SPARQL text
(``queries.py``) and so yield identical facts; ``engine="auto"`` picks Oxigraph from
``OXIGRAPH_ABOVE_BYTES`` of (uncompressed) input on, where it measured faster
(docs/sources.md, benchmarks/rdf_readers.py). The files are parsed on the first read and
again whenever one of them changes (size or mtime). From ``DISK_ABOVE_BYTES`` on, Oxigraph
stores the graph on disk (a scratch directory) instead of in memory, so a Wikidata-sized
dump is read in bounded memory; facts come out a page of subjects at a time either way.
"""

from __future__ import annotations

import gzip
import itertools
import json
import struct
import tempfile
import xml.sax
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Literal, cast

import pyoxigraph as ox
import rdflib
from rdflib.plugins.parsers.notation3 import BadSyntax

from kbsync.durable import scratch_directory
from kbsync.errors import SourceError
from kbsync.sources.catalogue import Catalogue
from kbsync.sources.reader import Backend, QueryReader, ReadOptions, Row, Term

Engine = Literal["auto", "rdflib", "oxigraph"]
OXIGRAPH_ABOVE_BYTES = (
    0  # Oxigraph measured faster at every size (4.7 KB .. 20 MB): docs/sources.md
)
# From this much (uncompressed) input on, Oxigraph keeps the graph in an on-disk store in a
# scratch directory, loaded in chunks of LOAD_CHUNK triples: memory stays bounded whatever the
# KB's size (benchmarks/diff_scale.py). Smaller inputs are held in memory, which is faster.
DISK_ABOVE_BYTES = 64 * 2**20
LOAD_CHUNK = 100_000

FORMATS = {  # extension -> (rdflib format, pyoxigraph format)
    ".ttl": ("turtle", ox.RdfFormat.TURTLE),
    ".nt": ("nt", ox.RdfFormat.N_TRIPLES),
    ".n3": ("n3", ox.RdfFormat.N3),
    ".rdf": ("xml", ox.RdfFormat.RDF_XML),
    ".owl": ("xml", ox.RdfFormat.RDF_XML),
    ".xml": ("xml", ox.RdfFormat.RDF_XML),
    ".jsonld": ("json-ld", ox.RdfFormat.JSON_LD),
    ".json": ("json-ld", ox.RdfFormat.JSON_LD),
}


class RdfFileSource(QueryReader):
    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        engine: Engine = "auto",
        options: ReadOptions | None = None,
        catalogue: Catalogue | None = None,
        scratch_dir: Path | None = None,
        disk_above_bytes: int = DISK_ABOVE_BYTES,
    ):
        """`scratch_dir`: where an on-disk store is made (default: the system's temp directory)."""
        super().__init__(options or ReadOptions(), catalogue)
        if engine not in ("auto", "rdflib", "oxigraph"):
            raise SourceError(f"RDF engine {engine!r} is not auto, rdflib or oxigraph")
        if not paths:
            raise SourceError("no RDF files given; set [kb] files")
        self.paths = [resolve_path(p) for p in paths]
        self.engine = engine
        self.scratch_dir = scratch_dir
        self.disk_above_bytes = disk_above_bytes
        self._loaded: tuple[tuple, Backend] | None = None

    def backend(self) -> Backend:
        stamp = tuple(_stat(p) for p in self.paths)
        if self._loaded is None or self._loaded[0] != stamp:
            engine = self.engine
            size = sum(uncompressed_size(p) for p in self.paths)
            if engine == "auto":
                engine = "oxigraph" if size >= OXIGRAPH_ABOVE_BYTES else "rdflib"
            self._loaded = None  # the previous store (and its scratch directory) goes first
            backend: Backend
            if engine == "oxigraph":
                backend = OxigraphBackend(self.paths, on_disk=size >= self.disk_above_bytes,
                                          scratch_dir=self.scratch_dir)
            else:
                backend = RdflibBackend(self.paths)
            self._loaded = (stamp, backend)
        return self._loaded[1]


class RdflibBackend:
    def __init__(self, paths: Sequence[Path]):
        self.graph = rdflib.Graph()
        for path in paths:
            fmt = rdf_format(path)[0]
            with _open(path) as f, _parse_errors(path, fmt):
                self.graph.parse(source=f, format=fmt, publicID=path.resolve().as_uri())

    def iter_select(self, query: str) -> Iterator[Row]:
        return iter(self.select(query))  # rdflib holds the graph in memory anyway

    def select(self, query: str) -> list[Row]:
        try:
            result = self.graph.query(query)
            return [
                {k: _rdflib_term(v) for k, v in row.asdict().items()}  # type: ignore[union-attr]
                for row in result
            ]
        except Exception as exc:  # rdflib's SPARQL engine raises pyparsing and plain errors
            raise SourceError(
                f"in-process SPARQL query failed: {_first_line(exc)}; check [kb] subjects"
            ) from exc


class OxigraphBackend:
    """The files in an Oxigraph store: in memory, or `on_disk` (RocksDB in a scratch directory,
    removed with the backend), filled from a streamed parse in chunks so memory stays bounded."""

    def __init__(self, paths: Sequence[Path], *, on_disk: bool = False, scratch_dir: Path | None = None):
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if not on_disk:
            self.store = ox.Store()  # in memory
            for path in paths:
                fmt = rdf_format(path)[1]
                with _open(path) as f, _parse_errors(path, fmt.name):
                    self.store.load(input=f, format=fmt, base_iri=path.resolve().as_uri())
            return
        self._scratch = scratch_directory(scratch_dir, "kbsync-rdf-")
        self.store = ox.Store(self._scratch.name)
        for path in paths:
            fmt = rdf_format(path)[1]
            with _open(path) as f, _parse_errors(path, fmt.name):
                quads = iter(ox.parse(f, fmt, base_iri=path.resolve().as_uri(), without_named_graphs=True))
                while chunk := list(itertools.islice(quads, LOAD_CHUNK)):
                    self.store.bulk_extend(chunk)

    def select(self, query: str) -> list[Row]:
        return list(self.iter_select(query))

    def iter_select(self, query: str) -> Iterator[Row]:
        try:
            solutions = self.store.query(query)
            assert isinstance(solutions, ox.QuerySolutions)
            names = [v.value for v in solutions.variables]
            for s in solutions:
                yield {n: _oxigraph_term(t) for n in names if (t := s[n]) is not None}
        except (SyntaxError, OSError, ValueError) as exc:
            raise SourceError(
                f"in-process SPARQL query failed: {_first_line(exc)}; check [kb] subjects"
            ) from exc


def resolve_path(path: str | Path) -> Path:
    text = str(path)
    if text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        data = resources.files("kbsync").joinpath("data")
        for candidate in (f"{name}.ttl", f"{name}.ttl.gz"):
            if data.joinpath(candidate).is_file():
                return Path(str(data.joinpath(candidate)))
        raise SourceError(
            f"no shipped knowledge base {text!r}; use builtin:demo or a file path in [kb] files"
        )
    return Path(text).expanduser()


def rdf_format(path: Path) -> tuple[str, ox.RdfFormat]:
    suffixes = [s.lower() for s in path.suffixes]
    ext = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (suffixes or [""])[-1]
    if ext not in FORMATS:
        raise SourceError(
            f"{path}: unknown RDF file extension {ext or '(none)'}; use one of "
            f"{', '.join(FORMATS)} (optionally + .gz)"
        )
    return FORMATS[ext]


def uncompressed_size(path: Path) -> int:
    size = _stat(path)[0]
    if path.suffix.lower() == ".gz" and size >= 4:
        with path.open("rb") as f:  # gzip's trailer: ISIZE, the input size mod 2**32
            f.seek(-4, 2)
            return int(struct.unpack("<I", f.read(4))[0])
    return size


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise SourceError(
            f"RDF file {path} cannot be read ({exc.strerror}); fix [kb] files"
        ) from exc
    if not path.is_file():
        raise SourceError(f"RDF file {path} is not a file; fix [kb] files")
    return st.st_size, st.st_mtime_ns


def _open(path: Path) -> BinaryIO:
    _stat(path)
    try:
        return cast(
            BinaryIO, gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")
        )
    except OSError as exc:
        raise SourceError(
            f"RDF file {path} cannot be read ({exc.strerror}); fix [kb] files"
        ) from exc


@contextmanager
def _parse_errors(path: Path, fmt: str) -> Iterator[None]:
    """Turn any parser's exception into a one-line SourceError naming the file and line."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        line, why = _error_line(exc)
        where = f"line {line}: " if line else ""
        raise SourceError(
            f"cannot parse RDF file {path} as {fmt}: {where}{why}; fix the file or its extension"
        ) from exc


def _error_line(exc: BaseException) -> tuple[int | None, str]:
    if isinstance(exc, BadSyntax):  # rdflib Turtle/N3: 0-based line
        return exc.lines + 1, str(exc._why)
    if isinstance(exc, xml.sax.SAXParseException):
        return exc.getLineNumber(), exc.getMessage()
    if isinstance(exc, json.JSONDecodeError):
        return exc.lineno, exc.msg
    if isinstance(exc, SyntaxError) and not isinstance(exc, BadSyntax):  # pyoxigraph
        return exc.lineno, _first_line(exc)
    if isinstance(exc, EOFError | gzip.BadGzipFile):
        return None, f"broken gzip data ({_first_line(exc)})"
    return None, _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())[:300]


def _rdflib_term(term: rdflib.term.Node) -> Term:
    if isinstance(term, rdflib.URIRef):
        return Term("iri", str(term))
    if isinstance(term, rdflib.Literal):
        datatype = str(term.datatype) if term.datatype else None
        return Term("literal", str(term), term.language, datatype)
    return Term("bnode", str(term))


def _oxigraph_term(term: object) -> Term:
    if isinstance(term, ox.NamedNode):
        return Term("iri", term.value)
    if isinstance(term, ox.Literal):
        return Term("literal", term.value, term.language, term.datatype.value)
    return Term("bnode", str(getattr(term, "value", term)))
