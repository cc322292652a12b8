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


class _Terminal:
    """A stderr that says it is a terminal, keeping what is written."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    @property
    def text(self) -> str:
        return "".join(self.parts)


def test_log_lines_print_whole_above_a_live_progress_bar(monkeypatch) -> None:
    """Issue 25: on a terminal, progress bars and log lines interleaved (a line broken into the bar)."""
    import re

    from rich.console import Console
    from rich.progress import Progress

    from kbsync import logs

    # the console `kbsync diff` and `kbsync stats` draw their bars on (before issue 25: a console of their own)
    console = getattr(logs, "console", lambda: Console(stderr=True))

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(logs, "_console", None, raising=False)
    logs.configure_logging("info", "console")
    long_value = "x" * 200                      # wider than any terminal: rich must not break it
    with Progress(console=console(), transient=True) as bar:
        task = bar.add_task("probing", total=2)
        bar.update(task, completed=1)
        bar.refresh()
        logs.get_logger("kbsync.test").warning("kb.settling", subject="Q142", note=long_value)
        logging.getLogger("apscheduler").warning("maximum number of running instances reached")
        bar.update(task, completed=2)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.text)
    lines = plain.replace("\r", "\n").splitlines()
    ours = [line for line in lines if "kb.settling" in line]
    assert len(ours) == 1 and long_value in ours[0] and "probing" not in ours[0]   # whole, and alone on its line
    assert any("maximum number of running instances" in line and "probing" not in line for line in lines)
    logs.configure_logging("info", "json")
