"""Every page in a real headless Chromium, on the database the real flow wrote; the figures
on the page are checked against SQL. Screenshots go to tests/artefacts/dashboard/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import func, select

from kbsync.dashboard.app import create_app
from kbsync.dashboard.server import BackgroundServer
from kbsync.store.models import (
    Batch,
    EditCheck,
    EditRequestRow,
    KbFact,
    ModelVersion,
    Probe,
    RequestTransition,
)


@pytest.fixture(scope="module")
def url(flow) -> Iterator[str]:  # type: ignore[no-untyped-def]
    server = BackgroundServer(create_app(flow.db, page_size=20), "127.0.0.1:0").start()
    yield server.url
    server.stop()


def texts(browser, css: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, css)]


def test_overview_matches_sql(browser, url: str, flow, screenshot) -> None:  # type: ignore[no-untyped-def]
    browser.get(url + "/")
    with flow.db.session() as s:
        queue = dict(s.execute(select(EditRequestRow.state, func.count()).group_by(EditRequestRow.state)).all())
        current = s.scalars(select(ModelVersion).where(ModelVersion.is_current)).one()
        settling = s.scalar(select(func.count()).select_from(KbFact).where(KbFact.settling_since.is_not(None)))
    assert browser.find_element(By.ID, "settling").text.startswith(f"{settling} KB changes settling")
    shown = {e.get_attribute("data-state"): int(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#queue td.num")}
    assert shown == queue and {"failed", "pending", "verified", "rolled_back"} <= set(queue)
    assert f"version {current.id}" in browser.find_element(By.ID, "current-version").text
    assert "rollback" in texts(browser, "#events td")
    assert "read-only" in browser.find_element(By.CSS_SELECTOR, "header .mode").text
    assert not browser.find_elements(By.CSS_SELECTOR, "form.action")
    screenshot("overview")


def test_timeline_matches_sql(browser, url: str, flow, screenshot) -> None:  # type: ignore[no-untyped-def]
    browser.get(url + "/timeline")
    with flow.db.session() as s:
        batches = list(s.scalars(select(Batch).order_by(Batch.id.desc())))
    rows = browser.find_elements(By.CSS_SELECTOR, "#batches tbody tr")
    assert [r.get_attribute("id") for r in rows] == [f"batch-{b.id}" for b in batches]
    for row, b in zip(rows, batches, strict=True):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == str(b.n_edits) and cells[3] == b.state.replace("_", " ")
        shown = [k for k in ("efficacy", "paraphrase", "neighbour", "efficacy_acc", "paraphrase_acc")]
        assert cells[4:9] == [f"{b.metrics[k]:.2f}" if k in b.metrics else "-" for k in shown]  # "-": not measured
        assert bool(cells[10]) == (b.state == "rolled_back")     # when and by whom it was rolled back
    assert browser.find_elements(By.CSS_SELECTOR, "#shares-chart svg .series")   # the chart has its lines
    screenshot("timeline")


def test_batch_page_matches_sql(browser, url: str, flow, screenshot) -> None:  # type: ignore[no-untyped-def]
    with flow.db.session() as s:
        batch = s.scalars(select(Batch).where(Batch.state == "verified")).first()
        requests = list(s.scalars(select(EditRequestRow.id).where(EditRequestRow.batch_id == batch.id)))
        n_checks = s.scalar(select(func.count()).select_from(EditCheck).where(EditCheck.batch_id == batch.id))
    browser.get(f"{url}/batches/{batch.id}")
    assert [e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "section.edit")] == \
        [f"edit-{r}" for r in sorted(requests)]
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.checks tbody tr")) == n_checks > 0
    assert browser.find_element(By.ID, "delta-sha").text == batch.delta_sha256
    assert browser.find_element(By.ID, "version-after").text.startswith(str(batch.version_after_id))
    screenshot("batch")


def test_click_from_batch_to_fact_and_back(browser, url: str, flow, screenshot) -> None:  # type: ignore[no-untyped-def]
    with flow.db.session() as s:
        batch_id = s.scalar(select(func.min(Batch.id)).where(Batch.state == "verified"))
    browser.get(f"{url}/batches/{batch_id}")
    link = browser.find_element(By.CSS_SELECTOR, "section.edit a.fact-link")
    link.click()
    subject, relation = browser.current_url.split("/facts/")[1].split("/")
    with flow.db.session() as s:
        ids = list(s.scalars(select(EditRequestRow.id).where(EditRequestRow.subject == subject,
                                                            EditRequestRow.relation == relation)))
        n_transitions = s.scalar(select(func.count()).select_from(RequestTransition)
                                 .where(RequestTransition.request_id.in_(ids)))
        n_probes = s.scalar(select(func.count()).select_from(Probe).where(Probe.subject == subject,
                                                                        Probe.relation == relation))
    assert f"({subject})" in browser.find_element(By.TAG_NAME, "h1").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#requests tbody tr")) == len(ids)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#transitions tbody tr")) == n_transitions
    assert len(browser.find_elements(By.CSS_SELECTOR, "#probes tbody tr")) == n_probes == 2   # before and after
    screenshot("fact")
    browser.back()
    assert browser.current_url.endswith(f"/batches/{batch_id}")
    browser.forward()
    browser.find_element(By.CSS_SELECTOR, f"#requests a[href='/batches/{batch_id}']").click()
    assert browser.current_url.endswith(f"/batches/{batch_id}")


def test_fact_search_by_label(browser, url: str) -> None:  # type: ignore[no-untyped-def]
    browser.get(url + "/facts")
    browser.find_element(By.ID, "q").send_keys("france")
    browser.find_element(By.ID, "relation").send_keys("P36")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    # the click returns before the form's GET and its redirect have loaded: wait for them (5 s at most)
    WebDriverWait(browser, 5).until(lambda b: b.current_url != url + "/facts")
    assert browser.current_url.endswith("/facts/Q142/P36")
    browser.get(url + "/facts?q=Atlantis")
    assert "No fact" in browser.find_element(By.TAG_NAME, "main").text


def test_failures_and_versions_match_sql(browser, url: str, flow, screenshot) -> None:  # type: ignore[no-untyped-def]
    with flow.db.session() as s:
        failed = list(s.scalars(select(EditRequestRow).where(EditRequestRow.state == "failed")))
        versions = list(s.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))
    browser.get(url + "/failures")
    counts = [int(t) for t in texts(browser, "#failure-groups td.num")]
    assert sum(counts) == len(failed) > 0
    screenshot("failures")
    browser.find_element(By.CSS_SELECTOR, "#failure-groups td.num a").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#failed tbody tr")) == counts[0]
    browser.get(url + "/versions")
    rows = browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
    assert [r.get_attribute("id") for r in rows] == [f"v{v.id}" for v in versions]
    for row, v in zip(rows, versions, strict=True):
        assert v.weights_sha256 in row.text
        assert [a.text for a in row.find_elements(By.CSS_SELECTOR, "a")] == [f"#{b}" for b in v.batch_ids]
    screenshot("versions")
