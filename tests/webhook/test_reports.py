"""Reports (webhook/reports.py, webhook/reporting/): runs made by the real app, read back as an SRE would.

The runs come from the service itself (hooks in Flagger's order, sessions,
gate, store); only the measurement is played back (tests/webhook/report_runs.py).
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from tests.webhook.conftest import TOKEN, payload
from tests.webhook.report_runs import Spec, close, flagger_run, rich_app, rich_config
from webhook.reporting import model, svg, text
from webhook.reporting.source import ReportSource

CHARTS = ("evidence-accuracy", "estimate-accuracy", "evidence-latency", "estimate-latency", "evidence-errors",
          "estimate-errors", "latency-percentiles", "load", "late", "errors", "latency-histogram", "discordant",
          "golden-rows", "accuracy", "scores", "classes")


@pytest.fixture
def runs(tmp_path):
    """A promoted run (digits), one rolled back at the golden-set check (podinfo) and one rolled back on
    latency after some windows (search), made by one app."""
    app = rich_app(tmp_path, {"digits": Spec(), "podinfo": Spec(accuracy_drop=0.3),
                              "search": Spec(latency_scale=3.0, late=40)},
                   # raw windows kept a week, as the drift report wants: the tests below compact them
                   rich_config(tmp_path, ("digits", "podinfo", "search"), compact_after_days=7))
    ids = {"promoted": flagger_run(app, "digits"), "golden": flagger_run(app, "podinfo"),
           "latency": flagger_run(app, "search")}
    yield app, ids
    app.extensions["shadowgate"].close()


def _charts(html: str) -> set[str]:
    return set(re.findall(r'data-chart="([^"]+)"', html))


def test_promoted_run_says_why_with_every_chart(runs):
    """The decision in words at the top, the checks table, every chart, the timeline with Flagger's calls."""
    app, ids = runs
    r = app.test_client().get(f"/reports/{ids['promoted']}")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert re.search(r'<h1 id="headline">Promoted: every critical check passed by window \d+</h1>', page)
    assert "not as bad as rollback" in page and "beta = 5 %" in page and "alpha = 1 %" in page
    assert 'id="checks"' in page and 'data-check="latency"' in page and 'data-check="accuracy"' in page
    assert set(CHARTS) <= _charts(page), set(CHARTS) - _charts(page)
    assert 'id="timeline"' in page and "flagger:confirm-promotion" in page and "flagger:event" in page
    assert "Promotion completed" in page and "In progress" not in page
    assert "<script" not in page.lower() and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(r.data) < 1_000_000


def test_rolled_back_at_the_golden_check(runs):
    """What failed, at which window (the golden-set check), against which threshold, with which guarantee."""
    app, ids = runs
    page = app.test_client().get(f"/reports/{ids['golden']}").get_data(as_text=True)
    assert "Rolled back: accuracy failed at window 1 (the golden-set check)" in page
    assert "against alert 2.0 points and rollback 5.0 points" in page
    assert "past the fail boundary log(1/alpha_k)" in page
    assert "A failed run stays failed" in page
    assert {"evidence-accuracy", "estimate-accuracy", "discordant", "scores"} <= _charts(page)
    assert "flagger:pre-rollout" in page and "412" in page and "Canary failed" in page


def test_rolled_back_on_latency_after_some_windows(runs):
    app, ids = runs
    c = app.test_client()
    page = c.get(f"/reports/{ids['latency']}").get_data(as_text=True)
    m = re.search(r"Rolled back: latency failed at window (\d+) \(an interval window\)", page)
    assert m, re.search(r'id="headline">([^<]+)', page).group(1)
    rep = c.get(f"/reports/{ids['latency']}?format=json").json
    lat = next(x for x in rep["checks"] if x["name"] == "latency")
    assert lat["verdict"] == "fail" and lat["decided_at"] == int(m.group(1)) and lat["estimate"] > 2.0
    # the late sends and errors of the canary are in the series and the totals
    assert rep["totals"]["canary"]["late"] > 0 and rep["totals"]["stable"]["late"] == 0
    assert sum(rep["raw"]["load"]["canary"]["late"]) == rep["totals"]["canary"]["late"]
    assert rep["raw"]["latency_ms"]["canary"]["p99"][-1] > 2 * rep["raw"]["latency_ms"]["stable"]["p99"][-1]
    assert rep["newest"]["latency_ms"]["edges"] and len(rep["newest"]["latency_ms"]["canary"]) == model.LATENCY_BINS


def test_api_and_text_carry_the_same_report(runs):
    app, ids = runs
    c = app.test_client()
    api = c.get(f"/api/v1/runs/{ids['golden']}").json
    page = c.get(f"/reports/{ids['golden']}?format=json").json
    assert api["report"]["decision"] == page["decision"]
    assert api["report"]["checks"] == page["checks"]
    assert api["report"]["decision"]["deciding_check"] == "accuracy"
    body = c.get(f"/reports/{ids['latency']}?format=text").get_data(as_text=True)
    assert body.startswith(f"Shadowgate report {ids['latency']}: Rolled back: latency failed")
    assert max(len(line) for line in body.splitlines()) <= text.WIDTH
    for section in ("Decision", "Checks", "Windows", "Load and errors", "Timeline"):
        assert f"\n{section}" in body


def test_list_is_newest_first_and_filters(runs):
    app, ids = runs
    c = app.test_client()
    page = c.get("/reports").get_data(as_text=True)
    order = re.findall(r'<tr data-run="(run-[0-9a-f]{16})"', page)
    assert order == [ids["latency"], ids["golden"], ids["promoted"]]
    assert "latency (window" in page and "accuracy (window 1)" in page  # the deciding check
    rows = c.get("/reports?outcome=fail&format=json").json["runs"]
    assert {r["id"] for r in rows} == {ids["golden"], ids["latency"]}
    rows = c.get("/reports?analysis=digits&caller=flagger&namespace=test&name=digits&format=json").json["runs"]
    assert [r["id"] for r in rows] == [ids["promoted"]] and rows[0]["status"] == "succeeded"
    assert rows[0]["windows"] >= 2 and rows[0]["duration_s"] >= 0 and rows[0]["deciding_check"]
    assert c.get("/reports?status=failed&format=json").json["runs"][0]["status"] == "failed"
    assert c.get("/reports?caller=argo&format=json").json["runs"] == []
    assert "No run matches" in c.get("/reports?caller=argo").get_data(as_text=True)
    for bad in ("outcome=maybe", "namespace=Bad_NS", "limit=0", "limit=x", "caller=jenkins"):
        r = c.get(f"/reports?{bad}")
        assert r.status_code == 400 and r.mimetype == "text/html", bad


def test_run_in_progress_renders_what_it_has(tmp_path):
    app = rich_app(tmp_path, {"digits": Spec()})
    try:
        c = app.test_client()
        run_id = c.post("/flagger/confirm-rollout", json=payload(phase="Initialized")).json["run"]
        page = c.get(f"/reports/{run_id}").get_data(as_text=True)  # no window yet
        assert "Undecided after 0 windows: the run is in progress" in page
        assert "No window with raw data yet" in page or 'id="latency"' in page
        c.post("/flagger/pre-rollout", json=payload())
        close(app, run_id)
        page = c.get(f"/reports/{run_id}").get_data(as_text=True)
        assert 'id="in-progress"' in page and "The session is measuring now" in page
        assert "evidence-latency" in _charts(page)
        assert c.get(f"/reports/{run_id}?format=json").json["decision"]["live"] is True
    finally:
        app.extensions["shadowgate"].close()


def test_unknown_run_is_a_404_page_and_ids_are_validated(runs):
    app, _ = runs
    c = app.test_client()
    r = c.get("/reports/run-0123456789abcdef")
    assert r.status_code == 404 and r.mimetype == "text/html" and "no run run-0123456789abcdef" in r.get_data(True)
    for bad in ("run-XYZ", "run-0123456789abcdef0", "..%2F..%2Fetc", "<script>"):
        r = c.get(f"/reports/{bad}")
        assert r.status_code in (400, 404) and r.mimetype == "text/html", bad
        assert "<script>" not in r.get_data(as_text=True)
    assert c.get("/reports/run-0123456789abcdef/drift").status_code == 404
    assert c.get(f"/reports/{_['promoted']}?format=pdf").status_code == 400
    assert c.get(f"/reports/{_['promoted']}/drift?kind=weights").status_code == 400


def test_reports_need_the_token_in_both_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("SG_REPORT_TOKEN", TOKEN)
    cfg = rich_config(tmp_path, ("digits",), auth={"token_env": "SG_REPORT_TOKEN"})
    app = rich_app(tmp_path, {"digits": Spec()}, cfg)
    try:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        run_id = flagger_run(app, "digits", windows=3, headers=bearer)
        c = app.test_client()
        for path in ("/reports", f"/reports/{run_id}", f"/reports/{run_id}/drift", f"/reports/{run_id}?format=json"):
            r = c.get(path)
            assert r.status_code == 401 and r.mimetype == "text/html", path
            assert r.headers["WWW-Authenticate"].startswith("Basic"), path  # the browser asks for the token
            assert c.get(path, headers={"Authorization": "Bearer wrong-token-0000000"}).status_code == 401
        assert c.get(f"/reports/{run_id}", headers=bearer).status_code == 200
        basic = base64.b64encode(f"sre:{TOKEN}".encode()).decode()
        assert c.get("/reports", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert c.get(f"/api/v1/runs/{run_id}").status_code == 401
    finally:
        app.extensions["shadowgate"].close()


def test_hook_answers_link_the_report(tmp_path):
    """Point 4: Flagger answers and Argo's JSON carry the report's public URL, which serves the page."""
    cfg = rich_config(tmp_path, ("digits",), public_url="https://shadowgate.example.com/")
    app = rich_app(tmp_path, {"digits": Spec()}, cfg)
    try:
        c = app.test_client()
        r = c.post("/flagger/confirm-rollout", json=payload(phase="Initialized"))
        run_id = r.json["run"]
        assert r.json["report"] == f"https://shadowgate.example.com/reports/{run_id}"
        r = c.post("/flagger/pre-rollout", json=payload())
        assert r.json["report"].endswith(f"/reports/{run_id}")
        r = c.post("/flagger/rollback", json=payload())
        assert r.status_code == 409 and r.json["report"].endswith(f"/reports/{run_id}")
        a = c.get("/argo/v1/analyses/digits?rollout=podinfo&revision=abc123&namespace=prod")
        assert a.status_code == 200 and a.json["report"] == f"https://shadowgate.example.com/reports/{a.json['run']}"
        path = a.json["report"].removeprefix("https://shadowgate.example.com")
        assert c.get(path).status_code == 200
        # Argo's calls are in the timeline too (Flagger's hooks record themselves)
        for _ in range(2):
            c.get("/argo/v1/analyses/digits?rollout=podinfo&revision=abc123&namespace=prod")
        page = c.get(path).get_data(as_text=True)
        assert "argo:analysis" in page and "https://shadowgate.example.com/reports/" in page
        rep = c.get(path + "?format=json").json
        argo = [g for g in rep["timeline_groups"] if g["kind"] == "argo:analysis"]
        assert sum(g["count"] for g in argo) == 3 and argo[0]["status"] == 200
    finally:
        app.extensions["shadowgate"].close()


def test_compacted_run_still_reads(runs):
    """Retention drops the raw data of old finished runs: the decision, checks and evidence remain, and the
    per-window figures of the raw data come from the summaries the store kept."""
    app, ids = runs
    svc = app.extensions["shadowgate"]
    assert svc.store.compact(before=time.time() + 10) > 0
    c = app.test_client()
    page = c.get(f"/reports/{ids['latency']}").get_data(as_text=True)
    assert "Rolled back: latency failed" in page and "without raw data: compacted" in page
    assert {"evidence-latency", "estimate-latency"} <= _charts(page)
    assert "raw data not read or compacted" not in page and "latency-percentiles" in _charts(page)


def test_cli_report_in_three_forms(runs, tmp_path, capsys):
    from webhook import cli

    app, ids = runs
    cfg = tmp_path / "analyses.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(rich_config(tmp_path, ("digits", "podinfo", "search"))))
    assert cli.main(["report", ids["golden"], "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "Rolled back: accuracy failed at window 1" in out and max(map(len, out.splitlines())) <= 100
    assert cli.main(["report", "latest", "--config", str(cfg), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["id"] == ids["latency"]
    html_path = tmp_path / "incident.html"
    assert cli.main(["report", ids["promoted"], "--store", str(tmp_path / "runs.db"), "--format", "html",
                     "--output", str(html_path)]) == 0
    html = html_path.read_text()
    assert "Promoted: every critical check passed" in html and "evidence-latency" in html
    assert 'href="/reports' not in html  # a file has no service to link to
    assert cli.main(["report", "run-0123456789abcdef", "--config", str(cfg)]) == 1
    assert cli.main(["report", "nope", "--config", str(cfg)]) == 2
    assert cli.main(["report", "latest", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "usage" not in capsys.readouterr().out


# ------------------------------------------------------------------ pieces


def test_window_selection_keeps_first_newest_and_decisions():
    seqs = list(range(1, 1001))
    got = model.select_windows(seqs, {7, 500}, limit=100)
    assert got[0] == 1 and got[-model.NEWEST:] == seqs[-model.NEWEST:] and {7, 500} <= set(got)
    assert len(got) <= 100 + 2 and got == sorted(set(got))
    assert model.select_windows(list(range(1, 51)), {3}, limit=100) == list(range(1, 51))


def test_report_cost_does_not_grow_with_windows(tmp_path):
    """Reads are bounded: a run of 400 windows reads at most MAX_WINDOWS decisions and MAX_RAW_WINDOWS data."""
    app = rich_app(tmp_path, {"digits": Spec(probes=20, requests=200)})
    try:
        c = app.test_client()
        run_id = c.post("/flagger/pre-rollout", json=payload()).json["run"]
        s = app.extensions["shadowgate"].sessions.live(run_id)
        s.golden_done.result(timeout=10)
        for _ in range(model.MAX_WINDOWS + 40):
            app.extensions["shadowgate"].sessions.call(s.close_window("interval"), 10)
        rep = c.get(f"/reports/{run_id}?format=json").json
        w = rep["windows"]
        assert w["total"] == model.MAX_WINDOWS + 41 and w["thinned"]
        assert w["read"] <= model.MAX_WINDOWS + 5 and w["raw_read"] <= model.MAX_RAW_WINDOWS + 5
        assert rep["series"]["seq"][-1] == w["total"] and rep["raw"]["seq"][-1] == w["total"]
        assert "read" in c.get(f"/reports/{run_id}").get_data(as_text=True)
    finally:
        app.extensions["shadowgate"].close()


def test_timeline_groups_alike_entries_across_interleaving():
    def ev(kind, msg, **data):
        return {"ts": time.time(), "kind": kind, "message": msg, "data": data or None}

    events = [ev("session", "session started")]
    for i in range(5):
        events += [ev("window", f"window {i}: continue: ...", outcome="continue"),
                   ev("flagger:rollout", "200: continue: ...", status=200)]
    events += [ev("decision", "run fail at window 6"), ev("flagger:rollout", "412: fail: ...", status=412),
               ev("flagger:rollout", "412: fail: ...", status=412)]
    groups = model.group_timeline(events)
    assert [(g["kind"], g["count"]) for g in groups] == [
        ("session", 1), ("window", 5), ("flagger:rollout", 5), ("decision", 1), ("flagger:rollout", 2)]
    assert sum(g["count"] for g in groups) == len(events)


def test_svg_breaks_lines_at_missing_values_and_clips():
    ch = svg.Chart("t", "t", ylim=(0, 10)).line([1, 2, 3, 4, 5], [1, None, 3, 50, float("nan")], svg.CANARY, "x")
    out = ch.render()
    assert out.count("<polyline") == 1 and out.count("<circle") >= 1  # [1] alone, [3, 50] a line
    pts = re.search(r'<polyline points="([^"]+)"', out).group(1).split()
    top = float(re.search(r'<rect x="\d+" y="(\d+)"[^>]*class="frame"', out).group(1))
    assert float(pts[-1].split(",")[1]) == top  # 50 is drawn at the top edge of the plot, not beyond
    assert 'data-chart="t"' in out and "<title>t</title>" in out


def test_source_reads_only_the_windows_asked(runs, tmp_path):
    app, ids = runs
    src = ReportSource(path=tmp_path / "runs.db")
    index = src.window_index(ids["promoted"])
    assert [w.seq for w in index] == list(range(1, len(index) + 1)) and all(w.has_data for w in index)
    got = src.windows(ids["promoted"], [1, 3], with_data=False)
    assert set(got) == {1, 3} and got[1][1] is None and got[1][0]["window"]["health"] == "golden"
    src.close()


def test_without_evidently_the_page_says_so(runs, monkeypatch):
    """The runtime image has no evidently: no drift link, and the drift URL is a 404 page saying why."""
    import webhook.reporting.drift as drift
    import webhook.reports as reports

    monkeypatch.setattr(reports, "drift_available", lambda: False)
    monkeypatch.setattr(drift, "available", lambda: False)
    app, ids = runs
    c = app.test_client()
    page = c.get(f"/reports/{ids['promoted']}").get_data(as_text=True)
    assert "drift-link" not in page and "not available here" in page
    r = c.get(f"/reports/{ids['promoted']}/drift?kind=predictions")
    assert r.status_code == 404 and "evidently is not installed" in r.get_data(as_text=True)
