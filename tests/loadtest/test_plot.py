"""Latency plots: a real PNG of the percentile distribution, from the library and from the CLI."""

import json
import struct

import numpy as np
import pytest

from loadtest.cli import main
from loadtest.hist import LatencyHistogram
from loadtest.load import LoadStats
from loadtest.plot import percentile_curve, plot_latency

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def stalled_stats(n: int = 5000) -> LoadStats:
    """A run where a fifth of the requests queued behind a ~1 s stall (seconds)."""
    rng = np.random.default_rng(1)
    service = rng.lognormal(np.log(0.002), 0.3, n)
    corrected = service.copy()
    corrected[: n // 5] += rng.uniform(0.0, 1.0, n // 5)
    stats = LoadStats(intended=n, sent=n, ok=n, duration_s=n / 200)
    stats.corrected.record_many(corrected)
    stats.service.record_many(service)
    return stats


def test_writes_a_valid_png_of_the_requested_size(tmp_path):
    out = plot_latency({"canary": stalled_stats()}, tmp_path / "lat.png", title="stall",
                       size_in=(8.0, 5.0), dpi=100)
    assert out == tmp_path / "lat.png"
    assert png_size(out) == (800, 500)
    # Two curves, annotations and a legend: well above a blank canvas, far below a photo.
    assert 15_000 < out.stat().st_size < 1_000_000


def test_histograms_with_points_and_a_reference_line(tmp_path):
    stats = stalled_stats()
    out = plot_latency([("ours", stats.corrected), ("ours service", stats.service)], tmp_path / "cmp.png",
                       points={"other tool": {0.5: 0.002, 0.9: 0.003, 0.99: 0.4}},
                       reference={"true p99": 0.95})
    assert png_size(out) == (1100, 660)  # the default 10 x 6 in at 110 dpi


def test_points_alone_are_enough_to_plot(tmp_path):
    out = plot_latency([], tmp_path / "p.png", points={"hey": {0.1: 0.001, 0.99: 0.2}})
    assert png_size(out)[0] > 0


def test_different_runs_draw_different_pictures(tmp_path):
    healthy = LoadStats()
    healthy.corrected.record_many(np.full(1000, 0.002))
    healthy.service.record_many(np.full(1000, 0.002))
    a = plot_latency({"run": healthy}, tmp_path / "a.png")
    b = plot_latency({"run": stalled_stats()}, tmp_path / "b.png")
    assert a.read_bytes() != b.read_bytes()


@pytest.mark.parametrize("runs", [{}, [], {"empty": LoadStats()}, [("empty", LatencyHistogram())]])
def test_refuses_empty_input(runs, tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_latency(runs, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_refuses_something_that_is_not_a_run(tmp_path):
    with pytest.raises(ValueError, match="runs\\['x'\\]: expected LoadStats or LatencyHistogram"):
        plot_latency({"x": [0.1, 0.2]}, tmp_path / "x.png")


def test_refuses_a_quantile_outside_0_1(tmp_path):
    with pytest.raises(ValueError, match="points\\['hey'\\]"):
        plot_latency([], tmp_path / "x.png", points={"hey": {99: 0.1}})


def test_percentile_curve_follows_the_histogram():
    hist = LatencyHistogram()
    hist.record_many(np.linspace(0.001, 1.0, 2000))
    q, s = percentile_curve(hist)
    assert q[0] == 0.0 and q[-1] == pytest.approx(1 - 1 / 2000)  # stops at the last value seen
    assert np.all(np.diff(q) > 0) and np.all(np.diff(s) >= 0)
    assert s[np.argmin(np.abs(q - 0.99))] == hist.quantile(0.99)  # p99 is on the curve, exactly
    assert s[-1] <= hist.max
    empty_q, empty_s = percentile_curve(LatencyHistogram())
    assert empty_q.size == empty_s.size == 0


def test_unwritable_path_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        plot_latency({"run": stalled_stats(500)}, tmp_path / "missing" / "x.png")


# ---------------------------------------------------------------- CLI
def test_cli_plot_flag_writes_the_png(echo, tmp_path, capsys):
    out = tmp_path / "run.png"
    rc = main(["--target", echo.grpc_target, "--model", "digits", "--rps", "200", "--duration", "1s",
               "--input-shape", "64", "--output", "json", "--no-progress", "--plot", str(out)])
    cap = capsys.readouterr()
    assert rc == 0
    assert json.loads(cap.out)["load"]["ok"] == 200  # stdout stays pure JSON
    assert f"plot written to {out}" in cap.err
    width, height = png_size(out)
    assert (width, height) == (1100, 660) and out.stat().st_size > 15_000


@pytest.mark.parametrize("name,why", [
    ("nodir/x.png", "no such directory"),
    ("x.jpg", "expected a .png"),
    ("folder.png", "is a directory"),
])
def test_cli_bad_plot_path_is_one_clear_line_before_any_load(name, why, tmp_path, capsys):
    (tmp_path / "folder.png").mkdir()
    path = tmp_path / name
    # An unreachable target: the path is refused before anything is sent.
    rc = main(["--target", "127.0.0.1:1", "--model", "m", "--rps", "10", "--duration", "1s",
               "--input-shape", "64", "--plot", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--plot" in err and why in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_plot_of_a_run_without_successes_says_so(echo_with, tmp_path, capsys):
    server = echo_with(error_ratio=1.0, error_code="UNAVAILABLE")
    out = tmp_path / "none.png"
    rc = main(["--target", server.grpc_target, "--model", "digits", "--rps", "50", "--duration", "0.4s",
               "--input-shape", "64", "--no-progress", "--plot", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--plot: no successful requests" in err and "Traceback" not in err
    assert not out.exists()
