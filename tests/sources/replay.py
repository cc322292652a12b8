"""benchmarks/wikidata_fixture.py (the local EventStreams and API servers), loaded for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "wikidata_fixture.py"
_spec = importlib.util.spec_from_file_location("wikidata_fixture", _PATH)
assert _spec is not None and _spec.loader is not None
fixture = sys.modules.setdefault("wikidata_fixture", importlib.util.module_from_spec(_spec))
if not hasattr(fixture, "StreamServer"):
    _spec.loader.exec_module(fixture)
