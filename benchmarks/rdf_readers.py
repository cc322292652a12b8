"""Time the two in-process RDF readers (rdflib, pyoxigraph) on growing Wikidata-shaped KBs.

The KB is scripts/make_kb.py's Turtle from known_1000, repeated with shifted ids
(×1 ≈ 10k triples, 400 KB). For each size and engine: parse time, time of a full read of
every catalogue relation (truthy mode), and a check that both engines give the same facts.
The result picks ``OXIGRAPH_ABOVE_BYTES`` in kbsync/sources/rdf.py.

Example:
    .venv/bin/python benchmarks/rdf_readers.py --copies 1,10,50
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import structlog  # noqa: E402
from make_kb import DEFAULT_SOURCE, build_turtle  # noqa: E402

from kbsync.sources.catalogue import load_catalogue  # noqa: E402
from kbsync.sources.rdf import RdfFileSource  # noqa: E402
from kbsync.sources.reader import ReadOptions  # noqa: E402


def run(path: Path, engine: str, relations: list[str], mode: str) -> tuple[float, float, int, str]:
    source = RdfFileSource([path], engine=engine, options=ReadOptions(mode=mode))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    backend = source.backend()  # parse
    t1 = time.perf_counter()
    facts = source.read_all(relations)
    t2 = time.perf_counter()
    triples = len(backend.graph) if engine == "rdflib" else len(backend.store)  # type: ignore[attr-defined]
    digest = hashlib.sha256("".join(f.content_hash() for f in facts).encode()).hexdigest()[:12]
    return t1 - t0, t2 - t1, triples, f"{len(facts)} facts {digest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--copies", default="1,10,50", help="comma-separated KB sizes (copies of known_1000)"
    )
    parser.add_argument("--engines", default="oxigraph,rdflib")
    parser.add_argument("--mode", default="truthy", choices=["truthy", "statements"])
    parser.add_argument("--extra", nargs="*", default=[], help="more RDF files to time as they are")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    records = json.loads(DEFAULT_SOURCE.read_text(encoding="utf-8"))
    relations = load_catalogue().ids()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(f) for f in args.extra]
        for n in (int(c) for c in args.copies.split(",") if c):
            path = Path(tmp) / f"known1000x{n}.ttl"
            path.write_text(build_turtle(records, n), encoding="utf-8")
            files.append(path)
        print("| file | bytes | triples | engine | parse s | read s | total s | facts |")
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |")
        for path in files:
            for engine in args.engines.split(","):
                parse_s, read_s, triples, facts = run(path, engine, relations, args.mode)
                print(
                    f"| {path.name} | {path.stat().st_size} | {triples} | {engine} | {parse_s:.2f} "
                    f"| {read_s:.2f} | {parse_s + read_s:.2f} | {facts} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
