"""A database that the real flow wrote (diff → apply → a failing apply → diff → rollback) on a
tiny random Llama and a small Wikidata-shaped Turtle KB, the dashboard served over it, and a
headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbsync.config import Settings
from kbsync.store import db as store_db

REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = REPO / "tests" / "artefacts" / "dashboard"   # screenshots (gitignored)
TOKEN = "s3cret-token-for-tests-0123456789"
CAPITALS = [  # (subject, label, capital id, capital label)
    ("Q142", "France", "Q90", "Paris"), ("Q183", "Germany", "Q64", "Berlin"), ("Q38", "Italy", "Q220", "Rome"),
    ("Q17", "Japan", "Q1490", "Tokyo"), ("Q29", "Spain", "Q2807", "Madrid"), ("Q55", "Holland", "Q727", "Amsterdam"),
]
CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome.",
    "The capital of Japan is Tokyo. The capital of Spain is Madrid. The capital of Holland is Amsterdam.",
    "The capital city of France is Paris, and Germany's capital city is Berlin.",
]


def turtle() -> str:
    lines = ["@prefix wd: <http://www.wikidata.org/entity/> .", "@prefix wdt: <http://www.wikidata.org/prop/direct/> .",
             "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> ."]
    for subject, label, capital, capital_label in CAPITALS:
        lines += [f'wd:{subject} rdfs:label "{label}"@en ; wdt:P36 wd:{capital} .',
                  f'wd:{capital} rdfs:label "{capital_label}"@en .']
    return "\n".join(lines) + "\n"


def settings_for(model_dir: Path, root: Path, url: str, **sections: dict) -> Settings:
    data: dict[str, dict] = {
        "state": {"dir": str(root / "state")},
        "database": {"url": url},
        "model": {"path": str(model_dir), "device": "cpu"},
        "kb": {"source": "rdf", "mode": "truthy", "files": [str(root / "kb.ttl")]},  # wdt: triples only
        "relations": {"enabled": ["P36"]},
        "probe": {"max_new_tokens": 3, "sample_unchanged": 0},
        # plain MEMIT (edit_memory 0): the pages' tests count what this fixed flow leaves in each state,
        # and on a random model which edits still hold after rolling back batch 1 depends on the solve
        "editing": {"layers": [1, 2], "cov_lambda": 1.0, "cov_samples": 32, "corpus": str(model_dir / "corpus.txt"),
                    "v_steps": 25, "batch_size": 2, "retry_smaller": False, "edit_memory": 0.0},
        "verify": {"min_efficacy_acc": 0.0, "min_paraphrase_acc": 0.0,  # a random model says noise
                   "min_efficacy": 0.0, "min_paraphrase": 0.0, "min_specificity": 0.0, "neighbours": 0},
        # a random model's perplexity doubles with λ = 1: the gate runs and records, bounds wide open
        "gate": {"texts": 4, "max_perplexity_rise": 1e6, "max_perplexity_rise_base": 1e6, "max_known_drop": 1.0,
                 "max_known_drop_base": 1.0, "min_retention": 0.0,
                 "max_retention_drop": 1.0},
        "dashboard": {"token": TOKEN, "page_size": 20},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings.model_validate(data)


@dataclass
class Flow:
    settings: Settings
    db: store_db.Database
    state_dir: Path


def run_flow(model_dir: Path, root: Path, url: str) -> Flow:
    """diff; apply 4 edits (2 batches); apply 2 more where the update cannot take (failed); diff
    again (the model's new answers); roll back batch 1 through the CLI's rollback."""
    from kbsync.sync.apply import apply_pending
    from kbsync.sync.from_settings import diff_from_settings, model_writer
    from kbsync.sync.rollback import rollback

    (root / "kb.ttl").write_text(turtle(), encoding="utf-8")
    settings = settings_for(model_dir, root, url)
    state = settings.state.dir
    state.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(url)
    db = store_db.open_database(url)
    diff_from_settings(settings, db, state, run_id="diff1")
    apply_pending(model_writer(settings, db, state, run_id="apply1", worker="test:1"), batch_size=2, max_edits=4)
    # A learning rate of ~0 leaves the target vectors where they are, so the update changes
    # nothing, and every check must pass: the batch fails its thresholds.
    stuck = settings_for(model_dir, root, url, editing={"v_steps": 1, "v_lr": 1e-12},
                         verify={"min_efficacy": 1.0, "min_paraphrase": 1.0, "min_specificity": 1.0,
                                 # the unchanged model's greedy answer is noise, never the target: on a random
                                 # model p(new) > p(old) alone can hold by chance (it did on one host)
                                 "min_efficacy_acc": 1.0, "min_paraphrase_acc": 1.0})
    apply_pending(model_writer(stuck, db, state, run_id="apply2", worker="test:1"), batch_size=2)
    diff_from_settings(settings, db, state, run_id="diff2", full=True)
    rollback(model_writer(settings, db, state, run_id="rb1", worker="test:1"), 1)
    return Flow(settings, db, state)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_llama) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("dash-llama"), CORPUS)


@pytest.fixture(scope="session")
def flow(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[Flow]:
    """The flow run once per session: tests that use it must not change it (the rollback
    action test runs a flow of its own)."""
    kept = os.environ.get("KBSYNC_TEST_DASHBOARD_FLOW")  # while working on pages: reuse one run
    if kept and (Path(kept) / "state" / "kbsync.db").is_file():
        root = Path(kept)
        flow = Flow(settings_for(root / "model", root, f"sqlite:///{root / 'state' / 'kbsync.db'}"), store_db.open_database(
            f"sqlite:///{root / 'state' / 'kbsync.db'}"), root / "state")
    else:
        root = tmp_path_factory.mktemp("dash-flow")
        flow = run_flow(tiny_dir, root, f"sqlite:///{root / 'state' / 'kbsync.db'}")
    yield flow
    flow.db.dispose()


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed in CI (`make setup` installs them)")
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(2)
    yield chrome
    chrome.quit()


@pytest.fixture
def screenshot(browser, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """screenshot(name): save the page as tests/artefacts/dashboard/<test>-<name>.png (full height)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(max(int(height), 600), 6000))
        path = ARTEFACTS / f"{request.node.name}-{name}.png"
        browser.save_screenshot(str(path))
        browser.set_window_size(1400, 1000)
        return path

    return take
