"""The lifelong loop on a tiny model: checkpoints, figures in range, the model restored."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kbsync.errors import ConfigError
from kbsync.evaluation.datasets import EvalCase
from kbsync.model.scoring import perplexity
from kbsync.research.lifelong import KnownFact, load_known_facts, run_lifelong


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from kbsync.model.loading import load_model

    return load_model(str(tiny_model_dir), state_dir=tiny_model_dir.parent / "state", device="cpu")


def _cases(n: int) -> list[EvalCase]:
    subjects = ["France", "Germany", "Italy", "Holland", "Japan", "Spain"]
    return [EvalCase(str(i), f"The capital of {s}", s, "Tokyo", "Paris", (f"The capital city of {s}",),
                     (("The capital of Peru", "Lima"),)) for i, s in enumerate(subjects[:n])]


def test_perplexity_is_exp_of_the_mean_token_nll(loaded) -> None:
    model, tok = loaded.model, loaded.tokenizer
    text = "The Eiffel Tower is located in Paris, the capital of France."
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:])
    assert perplexity(model, tok, [text, text]) == pytest.approx(math.exp(float(nll)), rel=1e-4)


@pytest.mark.parametrize("options", [{"algorithm": "memit", "edit_memory": 0.0}, {"algorithm": "alphaedit", "norm_anchor": True},
                                     {"algorithm": "memit", "edit_memory": 1.0}])
def test_run_lifelong_records_every_checkpoint_and_restores_the_model(loaded, tmp_path: Path, options) -> None:
    from kbsync.editing.covariance import TextFileCorpus, second_moments
    from kbsync.editing.hparams import EditHyperParams

    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    hp = EditHyperParams(layers=(1, 2), v_steps=10, v_lr=1.0, n_prefixes=1, prefix_len=4, cov_lambda=1.0,
                         cov_samples=16, nullspace_threshold=1e-3, alphaedit_l2=1.0, **options)
    corpus = TextFileCorpus(Path(loaded.spec) / "corpus.txt")
    moments = second_moments(model, tok, adapter, hp.layers, corpus, hp.cov_samples, tmp_path / "stats",
                             model_identity="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    known = [KnownFact("The capital of France is", "France", "Paris"), KnownFact("Toko Yasuda lives in", "Toko", "Tokyo")]
    rows: list[dict] = []
    bases: list[dict] = []
    res = run_lifelong(loaded, hp, moments, _cases(6), batch_size=2, n_batches=3, every=2, known=known,
                       heldout=["The Eiffel Tower is located in Paris."], on_checkpoint=rows.append,
                       on_base=bases.append, compact=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored bit for bit
    assert [r["batch"] for r in res["checkpoints"]] == [2, 3] and rows == res["checkpoints"]
    assert bases == [res["base"]]  # reported before the first batch: a run cut short keeps it
    assert len(res["batch_s"]) == 3 and res["base"]["perplexity"] > 1
    assert res["base"]["known_pool"] == 1  # France is edited: its known fact is left out
    last = res["checkpoints"][-1]
    assert last["n_edits"] == 6 and 0 <= last["retention"] <= 1 and 0 <= last["edit_acc"] <= 1
    w = last["weights"][adapter.weight_name(2)]
    assert w["delta"] > 0 and w["norm"] > 0
    if options.get("norm_anchor"):
        assert last["z_norm_ratio"] == pytest.approx(1.0, abs=1e-3)
    comp = res["compaction"]  # all six edits re-solved from the base as one delta, against the log
    assert 0 <= comp["retention_compacted"] <= 1 and 0 <= comp["retention_sequential"] <= 1
    assert comp["weights"][adapter.weight_name(2)]["delta"] > 0 and len(res["cpu_s"]) == 3
    if options.get("edit_memory") == 1.0:  # chunks of the batch size, memory carried: the same chain again
        assert comp["chunk"] == 2 and comp["retention_compacted"] == comp["retention_sequential"]
        for name, figures in comp["weights"].items():
            assert figures["delta"] == pytest.approx(last["weights"][name]["delta"], rel=1e-4), name
    assert json.dumps(res)  # JSON-ready
    bench = _benchmark_module()  # the benchmark's table and plot of this very result
    text = bench.table({"tiny": res})
    assert text.count("| tiny |") == 4 and "retention, compacted" in text
    bench.plot({"tiny": res}, tmp_path / "lifelong.png")
    assert (tmp_path / "lifelong.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # runs side by side, one config each, merged into one table and plot; a run without a base is left out
    for name, result in (("a", res), ("b", res), ("cut", {"base": None, "checkpoints": [], "partial": True})):
        (tmp_path / f"{name}.json").write_text(json.dumps({"command": name, "results": {name: result}}))
    assert bench.merge([tmp_path / f"{n}.json" for n in ("a", "b", "cut")], tmp_path / "merged") == 0
    merged = json.loads((tmp_path / "merged" / "lifelong.json").read_text())
    assert list(merged["results"]) == ["a", "b"] and merged["commands"] == ["a", "b", "cut"]
    assert (tmp_path / "merged" / "summary.md").read_text().count("| a |") == 4
    assert bench.merge([tmp_path / "cut.json"], tmp_path / "none") == 2
    (tmp_path / "c.json").write_text(json.dumps({"command": "c", "results": {"c": res}}))  # onto an earlier merge
    assert bench.merge([tmp_path / "merged" / "lifelong.json", tmp_path / "c.json"], tmp_path / "more") == 0
    more = json.loads((tmp_path / "more" / "lifelong.json").read_text())
    assert list(more["results"]) == ["a", "b", "c"] and more["commands"] == ["a", "b", "cut", "c"]
    with pytest.raises(ConfigError, match="need 8 cases"):
        run_lifelong(loaded, hp, moments, _cases(6), batch_size=4, n_batches=2)


def _benchmark_module():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "lifelong.py"
    spec = importlib.util.spec_from_file_location("lifelong_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_known_facts_reads_rome_records_and_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    path.write_text(json.dumps([{"prompt": "Vinson Massif is located in the continent of", "subject": "Vinson Massif",
                                 "attribute": "Antarctica"}]))
    assert load_known_facts(path) == [KnownFact("Vinson Massif is located in the continent of", "Vinson Massif",
                                                "Antarctica")]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="known_1000"):
        load_known_facts(tmp_path / "bad.json")


def test_protected_keys_are_the_weighted_subject_keys(loaded) -> None:
    from kbsync.editing.keys import compute_keys
    from kbsync.editing.request import EditRequest
    from kbsync.research.lifelong import protected_keys

    facts = [KnownFact("The capital of France is", "France", "Paris"), KnownFact("Toko Yasuda lives in", "Toko", "Tokyo")]
    kept = protected_keys(loaded, facts, (1, 2), weight=3.0)
    keys, _ = compute_keys(loaded.model, loaded.tokenizer, loaded.adapter,
                           [EditRequest(f.prompt, f.subject, f.answer) for f in facts], ["{}"], [1, 2], 2)
    for layer in (1, 2):
        k = keys[layer].double()
        torch.testing.assert_close(kept.kkt[layer], 3.0 * k @ k.T)
    assert kept.n_keys == {1: 2, 2: 2}


class _Stopped(Exception):
    pass


def test_a_stopped_run_goes_on_from_its_last_checkpoint_as_if_unbroken(loaded, tmp_path: Path) -> None:
    from kbsync.editing.covariance import TextFileCorpus, second_moments
    from kbsync.editing.hparams import EditHyperParams

    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    hp = EditHyperParams(layers=(1, 2), v_steps=10, v_lr=1.0, n_prefixes=1, prefix_len=4, cov_lambda=1.0,
                         cov_samples=16, edit_memory=1.0)
    moments = second_moments(model, tok, adapter, hp.layers, TextFileCorpus(Path(loaded.spec) / "corpus.txt"),
                             hp.cov_samples, tmp_path / "stats", model_identity="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    known = [KnownFact("Toko Yasuda lives in", "Toko", "Tokyo")]
    kw = dict(batch_size=1, n_batches=6, every=2, known=known, heldout=["The Eiffel Tower is located in Paris."])
    unbroken = run_lifelong(loaded, hp, moments, _cases(6), **kw)

    def stop_after_the_second(row: dict) -> None:
        if row["batch"] == 4:
            raise _Stopped
    with pytest.raises(_Stopped):
        run_lifelong(loaded, hp, moments, _cases(6), snapshots=tmp_path / "snap", on_checkpoint=stop_after_the_second,
                     **kw)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored after the stop too
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["preserved-b4.safetensors", "snapshot-b4.safetensors",
                                                                  "snapshot.json"]

    seen: list[dict] = []
    resumed = run_lifelong(loaded, hp, moments, _cases(6), snapshots=tmp_path / "snap", resume=True,
                           on_checkpoint=seen.append, **kw)
    assert resumed["resumed_after"] == 4 and len(resumed["batch_s"]) == 6
    assert [r["batch"] for r in seen] == [2, 4, 6]  # the earlier rows are reported again

    def figures(res: dict) -> list[dict]:
        timing = {"seconds_per_batch", "cpu_s_per_batch", "measure_s"}
        return [{k: v for k, v in r.items() if k not in timing} for r in res["checkpoints"]]
    assert figures(resumed) == figures(unbroken)  # the curve an unbroken run draws
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    with pytest.raises(ConfigError, match="another run .*hparams.*--resume"):
        run_lifelong(loaded, hp.replace(cov_lambda=2.0), moments, _cases(6), snapshots=tmp_path / "snap",
                     resume=True, **kw)
    (tmp_path / "snap" / "snapshot-b6.safetensors").write_bytes(b"torn")
    with pytest.raises(ConfigError, match="unreadable .*delete the folder"):
        run_lifelong(loaded, hp, moments, _cases(6), snapshots=tmp_path / "snap", resume=True, **kw)
