"""Reports of real runs: `shadowgate serve` in its own process, stand-in TF Servings, Flagger's and Argo's calls.

The stand-in (tests/conftest.py `modelserver`) serves the demo model: stable
-> v1, canary -> v2, several points less accurate. Analysis "good" compares
v1 with itself (promoted), "worse" v1 with v2 (rolled back). The pages are
opened from the link in Flagger's answers, in headless Chromium with
JavaScript off; screenshots go to .cache/artifacts/reports/.
"""

from __future__ import annotations

import time

import pytest
import requests
import yaml

from tests.webhook.browser import Browser, chromium_or_skip
from tests.webhook.drivers import FlaggerDriver, argo_measure
from tests.webhook.service import free_port, start_service

pytestmark = pytest.mark.slow

INTERVAL_S = 2.0


@pytest.fixture(scope="module")
def service(tmp_path_factory, demo_assets, modelserver):
    chromium_or_skip()
    d = tmp_path_factory.mktemp("reports-e2e")
    port = free_port()

    def target(**which):
        return {"protocol": "tfserving-grpc", "address": modelserver.grpc_target, "model": "digits",
                "timeout_s": 2, **which}

    def analysis(canary):
        return {"stable": target(label="stable"), "canary": canary, "golden": str(demo_assets.golden),
                "reference": str(demo_assets.reference), "probe": {"rate": 40, "timeout_s": 2},
                "load": {"rate": 80, "max_rate": 100, "timeout_s": 2, "concurrency": 32},
                # as tests/webhook/test_e2e.py: 2 s windows hold a P90, not a P99; the demo's golden set
                # cannot separate 2 from 5 points, so any drop is tolerated up to 4 points
                "checks": {"latency": {"quantile": 0.9, "min_samples": 100, "alert": 3.0, "rollback": 6.0},
                           "accuracy": {"alert": 0.0, "rollback": 0.04}},
                "interval_s": INTERVAL_S, "min_window_probes": 30}

    cfg = {"server": {"store": str(d / "runs.db"), "interval_s": INTERVAL_S, "threads": 8,
                      "idle_timeout_s": 4 * INTERVAL_S, "public_url": f"http://127.0.0.1:{port}"},
           "analyses": {"good": analysis(target(version=1)), "worse": analysis(target(label="canary"))}}
    path = d / "analyses.yaml"
    path.write_text(yaml.safe_dump(cfg))
    svc = start_service(path, d, port=port, name="reports-service")
    svc.config_path = path
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def browser(service):
    b = Browser()
    yield b
    b.close()


def _report_link(result) -> str:
    links = {requests.compat.json.loads(body).get("report") for _, _, body in result.calls
             if body.startswith("{") and '"report"' in body}
    links.discard(None)
    assert len(links) == 1, links
    return links.pop()


def test_promoted_run_report(service, browser):
    result = FlaggerDriver(service.url, "good", checksum="rep-good", interval_s=INTERVAL_S, threshold=2).run()
    assert result.outcome == "promoted", result.calls
    url = _report_link(result)
    assert url.startswith(service.url + "/reports/run-")
    page = browser.page()
    assert page.goto(url).status == 200
    assert page.locator("#headline").inner_text().startswith("Promoted: every critical check passed by window")
    assert page.locator("#checks tr[data-check]").count() == 4
    for chart in ("evidence-accuracy", "estimate-accuracy", "evidence-latency", "estimate-latency",
                  "latency-percentiles", "latency-histogram", "load", "late", "errors", "discordant", "scores"):
        assert page.locator(f'svg[data-chart="{chart}"]').is_visible(), chart
    timeline = page.locator("#timeline").inner_text()
    for hook in ("flagger:confirm-rollout", "flagger:pre-rollout", "flagger:rollout", "flagger:confirm-promotion",
                 "flagger:post-rollout", "session"):
        assert hook in timeline, hook
    browser.shot(page, "e2e-report-promoted")
    assert browser.left_localhost() == []


def test_rolled_back_run_report(service, browser):
    result = FlaggerDriver(service.url, "worse", checksum="rep-worse", interval_s=INTERVAL_S, threshold=2).run()
    assert result.outcome == "rolled_back", result.calls
    url = _report_link(result)
    page = browser.page()
    assert page.goto(url).status == 200
    headline = page.locator("#headline").inner_text()
    assert headline.startswith("Rolled back: accuracy failed at window 1 (the golden-set check)"), headline
    text = page.locator("#decision-text").inner_text()
    assert "against alert 0.0 points and rollback 4.0 points" in text and "fail boundary" in text
    assert "alpha = 1 %" in page.locator("#guarantee").inner_text()
    row = page.locator('#checks tr[data-check="accuracy"]').inner_text()
    assert "fail" in row
    for chart in ("evidence-accuracy", "estimate-accuracy", "discordant", "golden-rows", "scores", "classes"):
        assert page.locator(f'svg[data-chart="{chart}"]').is_visible(), chart
    pre = page.locator('#timeline tr[data-kind="flagger:pre-rollout"]').inner_text()
    if "\t412\t" not in pre:  # the golden set outlasted server.golden_wait_s: the next hook failed the run
        assert "golden-set check still running" in pre, pre
        rows = (page.locator('#timeline tr[data-kind="flagger:rollback"]').all_inner_texts()
                + page.locator('#timeline tr[data-kind="flagger:rollout"]').all_inner_texts())
        assert any(("\t200\t" in r and "roll back" in r) or "\t412\t" in r for r in rows), rows
    browser.shot(page, "e2e-report-rolled-back")
    # the same run for a terminal, from the store the service writes
    from webhook import cli

    run_id = url.rsplit("/", 1)[1]
    out = service.config_path.parent / "incident.txt"
    assert cli.main(["report", run_id, "--config", str(service.config_path), "--output", str(out)]) == 0
    body = out.read_text()
    assert "Rolled back: accuracy failed at window 1" in body and max(map(len, body.splitlines())) <= 100
    assert browser.left_localhost() == []


def test_argo_run_report_lists_argos_calls(service, browser):
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        phase, result = argo_measure(service.url, "worse", "web", "rev-rep")
        if result.get("decision") == "fail":
            break
        time.sleep(INTERVAL_S / 2)
    assert result["decision"] == "fail", result
    page = browser.page()
    assert page.goto(result["report"]).status == 200
    assert page.locator("#headline").inner_text().startswith("Failed: accuracy failed at window")
    assert page.locator('#timeline tr[data-kind="argo:analysis"]').count() >= 1
    listing = browser.page()
    assert listing.goto(f"{service.url}/reports?caller=argo").status == 200
    assert listing.locator("#runs tr[data-run]").count() == 1
    assert browser.left_localhost() == []
