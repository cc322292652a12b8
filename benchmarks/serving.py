"""Into the serving stack (issue 27), measured on the bundled model with llama.cpp's server.

    1. N facts of ROME's known_1000 changed in an RDF KB (as benchmarks/verified_edits.py does),
       diffed and applied in one batch of N, in-process (what kbsync verifies)
    2. exported: GGUF with the edited matrices at F32 and at F16, the LoRA adapter (PEFT + GGUF),
       beside the HF directory's and the base GGUF's sizes
    3. llama.cpp's server on each: the base GGUF, the F32 GGUF, the F16 GGUF, the base GGUF with
       the GGUF LoRA: how many verified edits each names (greedy, temperature 0)
    4. the PEFT adapter on the base in transformers + peft against the merged version: max |logit diff|
    5. probe throughput, facts/s, on the KB's true facts: through one server and two replicas at
       concurrency 1, 4 and 16 ([probe] endpoint), and in-process (model/probe.py)

Prints one JSON object (and writes it with --json); the load average is in it: time figures
measured on shared cores are labelled by it. Needs `make llama-server`.

Example (CPU, minutes):
    nice -n 10 .venv/bin/python benchmarks/serving.py --n 20 --work /tmp/serving --json docs/bench/serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from build_llama_server import binary_path  # noqa: E402
from make_kb import build_turtle  # noqa: E402
from sqlalchemy import select  # noqa: E402
from verified_edits import KNOWN, pick  # noqa: E402

from kbsync.config import Settings  # noqa: E402
from kbsync.model.probe import ProbeItem  # noqa: E402
from kbsync.prompts import fill  # noqa: E402
from kbsync.serving.endpoint import CompletionsClient  # noqa: E402
from kbsync.serving.exports import base_gguf, export_gguf, export_lora  # noqa: E402
from kbsync.serving.served_probe import ServedModel  # noqa: E402
from kbsync.sources.catalogue import load_catalogue  # noqa: E402
from kbsync.store import db as store_db  # noqa: E402
from kbsync.store.models import EditRequestRow  # noqa: E402
from kbsync.store.states import RequestState  # noqa: E402
from kbsync.store.transitions import move_request  # noqa: E402
from kbsync.sync.apply import apply_pending  # noqa: E402
from kbsync.sync.from_settings import configured_model_key, diff_from_settings, model_writer  # noqa: E402

SERVE = ROOT / "scripts" / "serve_llama.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, work: Path, model: Path, lora: Path | None = None, threads: int = 2) -> None:
        self.port, self.pid = free_port(), work / f"llama-{time.monotonic_ns()}.pid"
        args = [sys.executable, str(SERVE), "--pid-file", str(self.pid), "--port", str(self.port),
                "--threads", str(threads), "--parallel", "16", str(model)] + (["--lora", str(lora)] if lora else [])
        subprocess.run(args, check=True, capture_output=True, timeout=300)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run([sys.executable, str(SERVE), "--pid-file", str(self.pid), "--stop"], timeout=60)


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--extra", type=int, default=100, help="true facts beside the changed ones (probed for speed)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--probe-facts", type=int, default=60, help="true facts probed for the facts/s figures")
    parser.add_argument("--reuse", action="store_true", help="keep the work directory's applied state")
    parser.add_argument("--prepare-only", action="store_true", help="diff and apply only (no server needed yet)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out: dict = {"load_before": os.getloadavg(), "n": args.n}
    settings, db, kb = prepare(args, out)
    if args.prepare_only:
        print(json.dumps(out, indent=2))
        (args.work / "prepare.json").write_text(json.dumps(out, indent=2) + "\n")
        return
    if not binary_path().is_file():
        sys.exit("no llama-server: `make llama-server` first")
    if (args.work / "prepare.json").is_file() and "apply_s" not in out:   # --reuse: the apply's own figures
        out |= {k: v for k, v in json.loads((args.work / "prepare.json").read_text()).items() if k != "load_before"}
    key = configured_model_key(settings, settings.state.dir)
    with db.session() as s:
        verified = list(s.scalars(select(EditRequestRow).where(EditRequestRow.state == RequestState.VERIFIED.value)))
        items = [ProbeItem(fill(r.prompt, r.subject_label), list(dict.fromkeys([r.target_new, *r.acceptable])))
                 for r in verified]
    out["verified"] = len(verified)

    # 2) exports and sizes
    ex = args.work / "exports"
    shutil.rmtree(ex, ignore_errors=True)
    ex.mkdir()
    f32 = export_gguf(settings, db, settings.state.dir, key, ex / "f32.gguf", precision="f32")
    f16 = export_gguf(settings, db, settings.state.dir, key, ex / "f16.gguf", precision="f16")
    lora = export_lora(settings, db, settings.state.dir, key, ex / "lora")
    base = base_gguf(settings.model.path)
    assert base is not None and f32.path and f16.path
    version_dir = Path(str(lora.version_id and _version_path(db, lora.version_id)))
    out["bytes"] = {"hf_version_dir": size(version_dir), "gguf_base": size(base), "gguf_f32": size(f32.path),
                    "gguf_f16": size(f16.path), "lora_dir": size(lora.path),
                    "lora_peft_safetensors": size(lora.path / "adapter_model.safetensors"),
                    "lora_gguf": size(lora.path / "adapter.gguf")}
    out["lora"] = {"rank": lora.rank, "modules": lora.modules, "max_rel_error": lora.max_rel_error}

    # 3) what llama.cpp's server says on the verified edits
    named = {}
    for name, model, adapter in [("base", base, None), ("gguf_f32", f32.path, None), ("gguf_f16", f16.path, None),
                                 ("base_plus_gguf_lora", base, lora.path / "adapter.gguf")]:
        server = Server(args.work, model, adapter)
        try:
            got = ServedModel("bench", CompletionsClient([server.url], concurrency=4)).probe(items, 8)
            named[name] = sum(r.agrees for r in got)
        finally:
            server.stop()
    out["llama_cpp_named_of_verified"] = named

    # 4) PEFT adapter vs merged version, bundled model
    out["peft_vs_merged_max_abs_logit_diff"] = peft_vs_merged(settings, version_dir, lora.path, items)

    # 5) probe throughput on the true facts
    out["probe_facts_per_s"] = throughput(args, settings, kb, base)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


def _version_path(db, version_id: int) -> Path:  # type: ignore[no-untyped-def]
    from kbsync.store.models import ModelVersion

    with db.session() as s:
        return Path(s.get(ModelVersion, version_id).path)


def prepare(args, out: dict):  # type: ignore[no-untyped-def]
    """The KB, its diff and the apply of N changes (reused with --reuse)."""
    catalogue = load_catalogue()
    records = json.loads(KNOWN.read_text(encoding="utf-8"))
    kb, changed = pick(records, args.n, set(catalogue.ids()), args.extra)
    by_id = {r["known_id"]: r for r in changed}
    true_kb, new_kb = args.work / "true.ttl", args.work / "changed.ttl"
    changed_kb = [by_id.get(r["known_id"], r) for r in kb]
    labels = {r[k] for r in kb + changed_kb for k in ("subject", "attribute")}
    true_kb.write_text(build_turtle(kb, numbered=labels), encoding="utf-8")
    new_kb.write_text(build_turtle(changed_kb, numbered=labels), encoding="utf-8")
    url = f"sqlite:///{args.work / 'kbsync.db'}"
    settings = Settings.model_validate({
        "state": {"dir": str(args.work / "state")}, "database": {"url": url},
        "model": {"path": "builtin:smollm2-135m", "device": "cpu"},
        "kb": {"source": "rdf", "files": [str(new_kb)], "mode": "statements"},
        "relations": {"enabled": sorted({r["relation_id"] for r in kb})}, "editing": {"batch_size": args.n},
        "probe": {"sample_unchanged": 0}})
    if args.reuse and (args.work / "kbsync.db").is_file():
        return settings, store_db.open_database(url), kb
    for stale in ("kbsync.db", "kbsync.db-wal", "kbsync.db-shm"):
        (args.work / stale).unlink(missing_ok=True)
    store_db.upgrade(url)
    db = store_db.open_database(url)
    true = settings.model_copy(update={"kb": settings.kb.model_copy(update={"files": [str(true_kb)]})})
    diff_from_settings(true, db, settings.state.dir, run_id="true")
    with db.session() as s:
        for row in s.scalars(select(EditRequestRow).where(EditRequestRow.state == RequestState.PENDING.value)):
            move_request(s, row, RequestState.SUPERSEDED, "benchmark: not one of the changed facts", run_id="bench")
    diff_from_settings(settings, db, settings.state.dir, run_id="changed")
    t0 = time.perf_counter()
    report = apply_pending(model_writer(settings, db, settings.state.dir, run_id="apply", worker="bench"),
                           batch_size=args.n, max_edits=args.n)
    out["apply_s"] = round(time.perf_counter() - t0, 1)
    out["applied"] = {"verified": report.applied, "failed": report.failed}
    return settings, db, kb


def peft_vs_merged(settings: Settings, version_dir: Path, lora: Path, items: list[ProbeItem]) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kbsync.model.loading import source_directory

    tok = AutoTokenizer.from_pretrained(version_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    enc = tok([it.prompt for it in items[:8]], return_tensors="pt", padding=True)
    merged = AutoModelForCausalLM.from_pretrained(version_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = merged(**enc).logits
    del merged
    source = source_directory(settings.model.path, settings.state.dir)   # the de-quantised base
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32),
                                        str(lora)).eval()
    with torch.no_grad():
        got = adapted(**enc).logits
    return float((got - want).abs().max())


def throughput(args, settings: Settings, kb: list[dict], base: Path) -> dict:  # type: ignore[no-untyped-def]
    from kbsync.model.probe import probe
    from kbsync.sync.from_settings import current_model

    catalogue = load_catalogue()
    items = [ProbeItem(catalogue[r["relation_id"]].prompt_for(r["subject"]), [r["attribute"]])
             for r in kb[:args.probe_facts]]
    result: dict = {"facts": len(items)}
    one = Server(args.work, base)
    try:
        for c in (1, 4, 16):
            client = CompletionsClient([one.url], concurrency=c)
            t0 = time.perf_counter()
            ServedModel("b", client).probe(items, 8)
            result[f"one_server_c{c}"] = round(len(items) / (time.perf_counter() - t0), 1)
    finally:
        one.stop()
    pair = [Server(args.work, base, threads=1), Server(args.work, base, threads=1)]
    try:
        for c in (1, 4, 16):
            client = CompletionsClient([s.url for s in pair], concurrency=c)
            t0 = time.perf_counter()
            ServedModel("b", client).probe(items, 8)
            result[f"two_replicas_c{c}"] = round(len(items) / (time.perf_counter() - t0), 1)
    finally:
        for s in pair:
            s.stop()
    loaded = current_model(settings, store_db.open_database(settings.database_url), settings.state.dir)
    t0 = time.perf_counter()
    probe(loaded.model, loaded.tokenizer, items, max_new_tokens=8, batch_size=32)
    result["in_process"] = round(len(items) / (time.perf_counter() - t0), 1)
    return result


if __name__ == "__main__":
    main()
