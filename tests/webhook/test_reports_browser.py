"""The report pages in real headless Chromium, with JavaScript off: what the on-call SRE sees.

Runs made by the app (tests/webhook/report_runs.py) are served over HTTP on
127.0.0.1; every page is loaded in Debian's Chromium through Playwright.
Each test asserts the decision text, the tables and every chart are there
and visible, that no request leaves 127.0.0.1, and keeps a screenshot
(.cache/artifacts/reports/).
"""

from __future__ import annotations

import pytest

from tests.webhook.browser import AppServer, Browser, chromium_or_skip
from tests.webhook.report_runs import Spec, close, flagger_run, rich_app, rich_config

RUN_CHARTS = ("evidence-accuracy", "estimate-accuracy", "evidence-latency", "estimate-latency", "evidence-errors",
              "estimate-errors", "evidence-errors_increase", "estimate-errors_increase", "latency-percentiles",
              "load", "late", "errors", "latency-histogram", "discordant", "golden-rows", "accuracy", "scores",
              "classes")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("reports-browser")
    app = rich_app(tmp, {"digits": Spec(), "podinfo": Spec(accuracy_drop=0.3),
                         "search": Spec(latency_scale=3.0, late=40), "live": Spec()},
                   # raw windows kept a week: the drift report reads them
                   rich_config(tmp, ("digits", "podinfo", "search", "live"), compact_after_days=7))
    ids = {"promoted": flagger_run(app, "digits"), "golden": flagger_run(app, "podinfo"),
           "latency": flagger_run(app, "search"), "live": flagger_run(app, "live", windows=2, finish=False)}
    c = app.test_client()
    c.get("/argo/v1/analyses/digits?rollout=web&revision=abc123&namespace=shop")  # an Argo run in the list
    server = AppServer(app)
    browser = Browser()
    try:
        yield server.url, ids, browser, app
    finally:
        browser.close()
        server.stop()
        app.extensions["shadowgate"].close()


def _assert_charts(page, names) -> None:
    for name in names:
        svg = page.locator(f'svg[data-chart="{name}"]')
        assert svg.count() == 1, name
        box = svg.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 150, (name, box)
        assert svg.locator("polyline, rect, polygon, circle").count() > 1, name  # something is drawn


def _load(browser, url):
    page = browser.page(javascript=False)
    resp = page.goto(url)
    assert resp is not None
    return page, resp


def test_run_list(site):
    url, ids, browser, _ = site
    page, resp = _load(browser, f"{url}/reports")
    assert resp.status == 200
    assert page.locator("h1").inner_text() == "Analysis reports"
    rows = page.locator("#runs tr[data-run]")
    assert rows.count() == 5
    assert rows.first.locator("td").nth(4).inner_text() == "argo"  # newest first
    assert page.locator(f'tr[data-run="{ids["golden"]}"]').inner_text().count("fail") >= 1
    assert "accuracy (window 1)" in page.locator(f'tr[data-run="{ids["golden"]}"]').inner_text()
    browser.shot(page, "reports-list")
    # the filter form works without JavaScript
    page.select_option('select[name="outcome"]', "fail")
    page.click('button[type="submit"]')
    page.wait_for_load_state()
    assert "outcome=fail" in page.url
    assert sorted(page.locator("#runs tr[data-run]").evaluate_all("rs => rs.map(r => r.dataset.run)")) == \
        sorted([ids["golden"], ids["latency"]])
    assert browser.left_localhost() == []


def test_promoted_run_page(site):
    url, ids, browser, _ = site
    page, resp = _load(browser, f"{url}/reports/{ids['promoted']}")
    assert resp.status == 200
    assert page.locator("#headline").inner_text().startswith("Promoted: every critical check passed by window")
    text = page.locator("#decision-text").inner_text()
    assert "latency" in text and "not as bad as rollback" in text
    assert "beta = 5 %" in page.locator("#guarantee").inner_text()
    assert page.locator("#checks tr[data-check]").count() == 4
    assert page.locator("#drift tr[data-drift]").count() >= 3
    _assert_charts(page, RUN_CHARTS)
    assert page.locator("#windows tr[data-window]").count() >= 3
    # confirm-promotion waits (412) until the last stage's pass, then answers 200 once
    assert page.locator('#timeline tr[data-kind="flagger:confirm-promotion"]').count() >= 1
    assert page.locator("#in-progress").count() == 0
    browser.shot(page, "report-promoted")
    assert browser.left_localhost() == []


def test_rolled_back_run_pages(site):
    url, ids, browser, _ = site
    page, _ = _load(browser, f"{url}/reports/{ids['golden']}")
    assert page.locator("#headline").inner_text() == "Rolled back: accuracy failed at window 1 (the golden-set check)"
    assert "past the fail boundary" in page.locator("#decision-text").inner_text()
    row = page.locator('#checks tr[data-check="accuracy"]').inner_text()
    assert "fail" in row and "2.0 points" in row and "5.0 points" in row
    _assert_charts(page, ("evidence-accuracy", "estimate-accuracy", "discordant", "golden-rows", "scores", "classes"))
    assert page.locator('#timeline tr[data-kind="flagger:pre-rollout"]').inner_text().count("412") >= 1
    browser.shot(page, "report-rolled-back-golden")

    page, _ = _load(browser, f"{url}/reports/{ids['latency']}")
    assert page.locator("#headline").inner_text().startswith("Rolled back: latency failed at window")
    _assert_charts(page, RUN_CHARTS)
    assert "late" in page.locator("#load-totals").inner_text()
    browser.shot(page, "report-rolled-back-latency")
    assert browser.left_localhost() == []


def test_run_in_progress_page(site):
    url, ids, browser, app = site
    close(app, ids["live"])  # a window more while the page is open
    page, _ = _load(browser, f"{url}/reports/{ids['live']}")
    assert "In progress" in page.locator("#in-progress").inner_text()
    _assert_charts(page, ("evidence-latency", "estimate-latency", "latency-percentiles"))
    browser.shot(page, "report-in-progress")
    assert browser.left_localhost() == []


def test_unknown_run_and_bad_id_pages(site):
    url, ids, browser, _ = site
    page, resp = _load(browser, f"{url}/reports/run-0123456789abcdef")
    assert resp.status == 404 and "no run run-0123456789abcdef" in page.locator("#error").inner_text()
    browser.shot(page, "report-404")
    page, resp = _load(browser, f"{url}/reports/not-a-run")
    assert resp.status == 400 and "not a run id" in page.locator("#error").inner_text()


@pytest.mark.slow
def test_drift_report_is_served_and_stays_offline(site):
    """evidently's own report (it needs JavaScript, inlined in the file): linked from the page, loads nothing
    from the internet."""
    url, ids, browser, _ = site
    page, _ = _load(browser, f"{url}/reports/{ids['promoted']}")
    links = page.locator("a.drift-link")
    assert links.count() == 2
    href = links.first.get_attribute("href")
    assert href.endswith("kind=inputs")
    page = browser.page(javascript=True)
    resp = page.goto(f"{url}{href}", timeout=120_000)
    assert resp.status == 200
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("Dataset Drift").first.is_visible()  # evidently's page rendered, offline
    browser.shot(page, "report-drift-inputs")
    resp = page.goto(f"{url}/reports/{ids['golden']}/drift?kind=predictions", timeout=120_000)
    assert resp.status == 200
    page.wait_for_load_state("networkidle")
    assert browser.left_localhost() == []
