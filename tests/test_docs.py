"""Every setting and every command is documented in README.md (generated; this fails on drift)."""

from __future__ import annotations

import re
from pathlib import Path

from kbsync.config import iter_settings
from kbsync.docs import commands_table, render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_reference_tables_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "README.md is out of date: run `.venv/bin/python -m kbsync.docs`"


def test_every_setting_and_command_is_in_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for section, key, _, help_text in iter_settings():
        assert f"`[{section}] {key}`" in text
        assert help_text, f"[{section}] {key} has no help line"
    for line in commands_table().splitlines()[2:]:
        command = re.match(r"\| `([^`]+)`", line).group(1)
        assert f"`{command}`" in text
        assert line.split("|")[3].strip() != "``", f"{command} has no Example: in its help"


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8")[:1500]
    assert "make demo" in head and "make test" in head
