"""One log stream (issue 15 #11): library logging and warnings come out as kbsync's JSON lines with
UTC timestamps, and no progress bar is drawn into it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings


def test_library_logging_and_warnings_are_json_lines(capsys) -> None:
    from kbsync.logs import configure_logging, get_logger

    run_id = configure_logging("info", "json")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job %r was missed by %s", "tick", "0:01:00")
    logging.getLogger("transformers").info("below warning: not shown at info")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
    get_logger("kbsync.test").info("ours", n=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert len(records) == 3 and records[2]["event"] == "ours"
    assert records[0]["logger"] == "apscheduler.scheduler" and "'tick'" in records[0]["event"]
    assert "a library warning" in records[1]["event"]
    assert all(r["run_id"] == run_id and r["timestamp"].endswith("Z") for r in records)


def test_dequantisation_progress_bar_is_switched_off() -> None:
    code = ("from kbsync.model.loading import quiet_progress_bars; quiet_progress_bars(); "
            "from transformers import modeling_gguf_pytorch_utils as g; "
            "list(g.tqdm(range(3), desc='Converting and de-quantizing GGUF tensors...'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "de-quantizing" not in p.stderr and "it/s" not in p.stderr
