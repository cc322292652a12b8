"""The docs cannot drift: generated tables are current, every setting and command is documented,
and README stays a short front door whose index reaches every page under docs/."""

from __future__ import annotations

import re
from pathlib import Path

from kbsync.config import iter_settings
from kbsync.docs import SECTIONS, commands_table, render

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"


def test_generated_tables_are_current() -> None:
    for where in SECTIONS:
        text = (ROOT / where).read_text(encoding="utf-8")
        assert render(text, where) == text, f"{where} is out of date: run `.venv/bin/python -m kbsync.docs`"


def test_every_setting_and_command_is_documented() -> None:
    reference = REFERENCE.read_text(encoding="utf-8")
    for section, key, _, help_text in iter_settings():
        assert f"`[{section}] {key}`" in reference
        assert help_text, f"[{section}] {key} has no help line"
    readme = README.read_text(encoding="utf-8")
    for line in commands_table().splitlines()[2:]:
        command = re.match(r"\| `([^`]+)`", line).group(1)
        assert f"`{command}`" in readme
        assert line.split("|")[3].strip() != "``", f"{command} has no Example: in its help"


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8")[:1500]
    assert "make demo" in head and "make test" in head


def test_readme_is_a_front_door_that_reaches_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count("\n") <= 350, "README.md is the front door: move long sections to docs/"
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", text))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages not reachable from README: {sorted(pages - linked)}"
    for page in linked:
        assert (ROOT / page).is_file(), f"README links {page}, which does not exist"
