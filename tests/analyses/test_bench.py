"""The judge's benchmark scripts stay runnable (tiny sizes; the figures come from full runs)."""

from bench import judge_quality, judge_speed


def test_quality_bench_runs_and_prints_its_tables(capsys):
    figures = judge_quality.main(["--steps", "5", "--power-steps", "5", "--rollouts", "2", "--power-rollouts", "1",
                                  "--detect", "1"])
    out = capsys.readouterr().out
    assert "| A/A (identical versions) | defaults |" in out
    assert "Kayenta MW (0.98, 0.25)" in out and "latency.max_ratio 1.2" in out
    assert 0.0 <= figures["aa_step[defaults]"] <= 1.0
    assert figures["power_step[error rate 2%]"] == 1.0


def test_speed_bench_runs(capsys):
    figures = judge_speed.main(["--repeat", "1"])
    assert "| judged | median ms | p95 ms |" in capsys.readouterr().out
    assert all(ms > 0 for ms in figures.values())
