"""`kbsync eval` end to end on a tiny random Llama: the JSON report's keys and value ranges."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

METRICS = {"es", "ps", "ns", "score", "efficacy_acc", "paraphrase_acc", "ge"}
TIMINGS = {"covariance_s", "targets_s", "keys_s", "solve_s", "total_s", "edits_per_s", "peak_rss_mb"}


def _check_report(report: dict, n: int) -> None:
    assert report["n_edits"] == n
    for side in ("pre", "post"):
        assert METRICS <= set(report[side])
        for key in METRICS - {"ge"}:
            assert 0.0 <= report[side][key] <= 1.0, (side, key, report[side][key])
        assert report[side]["ge"] > 0  # 100 tokens of text have bigrams
    t = report["timings"]
    assert TIMINGS <= set(t)
    assert all(t[k] >= 0 for k in TIMINGS)
    assert t["targets_s"] > 0 and t["solve_s"] > 0 and t["edits_per_s"] > 0 and t["peak_rss_mb"] > 50
    assert t["total_s"] >= t["targets_s"] + t["keys_s"] + t["solve_s"] - 1e-2
    c = report["config"]
    assert c["layers"] == [1, 2] and c["lambda"] == 1.0 and c["device"] == "cpu"
    assert c["schema"] == "cf-reduced"


def _weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def test_eval_one_batch(run_cli, eval_config: Path, reduced_file: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "eval.json"
    r = run_cli("--config", str(eval_config), "eval", "--dataset", str(reduced_file), "--json", str(out))
    assert r.exit_code == 0, r.err
    report = json.loads(out.read_text())
    _check_report(report, 4)
    assert "retention" not in report
    assert report["config"]["n_batches"] == 1 and report["config"]["algorithm"] == "memit"
    # the edits take: every new target wins after (before: what the random model happens to prefer)
    assert report["pre"]["es"] == 0.5 and report["post"]["es"] == 1.0
    assert "efficacy success (ES)" in r.out and "edits/s" in r.out
    # nothing written except caches under the state dir
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["cache"]


def test_eval_sequential_alphaedit_json_stdout(run_cli, eval_config: Path, reduced_file: Path) -> None:
    r = run_cli("--config", str(eval_config), "eval", "--dataset", str(reduced_file), "--sequential",
                "--batch-size", "2", "--algorithm", "alphaedit", "--gen-tokens", "20", "--json", "-")
    assert r.exit_code == 0, r.err
    report = json.loads(r.out)
    _check_report(report, 4)
    assert report["config"]["n_batches"] == 2 and report["config"]["algorithm"] == "alphaedit"
    assert 0.0 <= report["retention"] <= 1.0
    assert len(report["timings"]["batch_s"]) == 2


def test_eval_restores_the_model(eval_config: Path, reduced_file: Path, tmp_path: Path) -> None:
    from kbsync.config import load_settings
    from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model
    from kbsync.evaluation.datasets import load_cases
    from kbsync.evaluation.run import evaluate

    settings = load_settings(str(eval_config))
    loaded = load_configured_model(settings, tmp_path / "state")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    _, cases = load_cases(reduced_file)
    report = evaluate(loaded, hyper_parameters(settings, loaded), corpus_for(settings.editing.corpus, loaded), cases,
                      tmp_path / "state" / "cache" / "stats", batch_size=2, sequential=True, gen_tokens=0)
    assert report["post"]["ge"] is None and report["retention"] is not None
    after = loaded.model.state_dict()
    assert all(bool((before[k] == after[k]).all()) for k in before)


def test_eval_batch_size_without_sequential_is_an_error(run_cli, eval_config: Path, reduced_file: Path) -> None:
    r = run_cli("--config", str(eval_config), "eval", "--dataset", str(reduced_file), "--batch-size", "2")
    assert r.exit_code == 2
    assert r.err.startswith("ConfigError:") and "--sequential" in r.err


def test_eval_bad_dataset_is_one_line(run_cli, eval_config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "?", "answer": "!"}]))
    r = run_cli("--config", str(eval_config), "eval", "--dataset", str(bad))
    assert r.exit_code == 2
    assert len(r.err.strip().splitlines()) == 1
    assert "requested_rewrite" in r.err and "rephrase_prompt" in r.err and "loc_ans" in r.err


def test_eval_takes_the_lasting_options(run_cli, eval_config: Path, reduced_file: Path) -> None:
    r = run_cli("--config", str(eval_config), "eval", "--dataset", str(reduced_file), "--sequential",
                "--batch-size", "2", "--norm-anchor", "--early-stop-prob", "0.9", "--norm-constraint", "0.5",
                "--gen-tokens", "0", "--json", "-")
    assert r.exit_code == 0, r.err
    c = json.loads(r.out)["config"]
    assert (c["norm_anchor"], c["early_stop_prob"], c["norm_constraint"]) == (True, 0.9, 0.5)
    bad = run_cli("--config", str(eval_config), "eval", "--dataset", str(reduced_file), "--early-stop-prob", "1.5")
    assert bad.exit_code == 2 and "early-stop-prob" in bad.err
