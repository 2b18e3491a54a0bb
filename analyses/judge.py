"""The judge's entry points: fold windows through the gate, read one decision.

    gate = Gate(config, golden_rows=360)
    state = gate.new_state()
    for window in windows:            # one update per window, constant cost
        gate.update(state, window)
    verdict = gate.verdict(state)     # pass / fail / continue, with every check

`judge_windows` does exactly that for a list (tests, benchmarks, the job
mode). analyses.gate says how the decision is made and why it holds.
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import JudgeConfig
from .gate import Gate, RunState
from .results import CheckResult, Verdict
from .window import Window

__all__ = ["CheckResult", "Gate", "RunState", "Verdict", "judge_windows"]


def judge_windows(windows: Iterable[Window], config: JudgeConfig | None = None, *,
                  golden_rows: int | None = None, active: list[str] | None = None) -> Verdict:
    """The run's decision after `windows`, in order (each window is one look)."""
    gate = Gate(config, golden_rows=golden_rows, active=active)
    state = gate.new_state()
    for w in windows:
        gate.update(state, w)
    return gate.verdict(state)
