"""Pure comparison and judgement: windows of numbers in, typed verdicts out.

    from analyses.config import JudgeConfig, load_judge_config
    from analyses.gate import Gate

No sockets, no clocks: latencies in seconds, rates as ratios in 0..1.
Names are imported lazily so `analyses.window` stays cheap to import.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CheckResult": "results", "Verdict": "results", "Gate": "gate", "RunState": "gate",
    "ConfigError": "config", "JudgeConfig": "config", "load_judge_config": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'analyses' has no attribute {name!r}")
