"""Human output of a load run: a live progress line and a ghz-like summary.

Text for people shows milliseconds and percent; everything in code stays
in seconds and ratios.
"""

from __future__ import annotations

import sys
from typing import TextIO

from loadtest.load import LoadStats
from loadtest.shadow import ProbeStats

QUANTILES = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.2f} %"


def format_summary(stats: LoadStats, *, target: str = "", schedule: str = "", warmup_s: float = 0.0,
                   probes: ProbeStats | None = None) -> str:
    """A ghz-like text summary of a load run (and of shadow probes when given)."""
    lines = ["", "Summary:"]
    if target:
        lines.append(f"  Target:        {target}")
    if schedule:
        extra = f" (warm-up {warmup_s:g} s excluded)" if warmup_s > 0 else ""
        lines.append(f"  Schedule:      {schedule}{extra}")
    lines += [
        f"  Count:         {stats.sent} sent of {stats.intended} intended",
        f"  Total:         {stats.duration_s:.2f} s",
        f"  Requests/sec:  {stats.achieved_rps:.2f} achieved, {stats.target_rps:.2f} scheduled",
        f"  OK:            {stats.ok}",
        f"  Errors:        {stats.errors} ({_pct(stats.error_ratio)})",
        f"  Late:          {stats.late} could not leave on time (concurrency cap reached)"
        + (f", {stats.unsent} never sent" if stats.unsent else ""),
        *([f"  Unmeasured:    {stats.own} the client's own, not the server's: "
           + ", ".join(f"{k} {n}" for k, n in sorted(stats.own_by_code.items()))
           + " (cancelled or shed unanswered, or late on the client's loop; not errors)"] if stats.own else []),
        "",
        "Latency of OK requests (ms):",
        f"  {'':<8}{'corrected':>12}{'service':>12}",
    ]
    for q, name in QUANTILES:
        lines.append(f"  {name:<8}{_ms(stats.corrected.quantile(q)):>12}{_ms(stats.service.quantile(q)):>12}")
    lines.append(f"  {'max':<8}{_ms(stats.corrected.max):>12}{_ms(stats.service.max):>12}")
    lines.append(f"  {'mean':<8}{_ms(stats.corrected.mean):>12}{_ms(stats.service.mean):>12}")
    lines.append("  corrected: from the intended send time (includes stalls and waits);"
                 " service: from the actual send")
    lines.append(f"  send lag p99: {_ms(stats.send_lag.quantile(0.99))} ms"
                 f" (how late requests left versus the timetable)")
    cpu = stats.cpu_per_1000()
    if cpu is not None:
        lines.append(f"  client CPU: {cpu * 1e3:.0f} ms per 1000 requests")
    if stats.errors_by_code:
        lines += ["", "Errors by code:"]
        for code, n in sorted(stats.errors_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  [{code}]  {n}")
    if probes is not None:
        lines += ["", format_probes(probes)]
    return "\n".join(lines) + "\n"


def format_probes(probes: ProbeStats) -> str:
    """Text summary of shadow probes."""
    s = probes.summary()
    lines = [
        "Shadow probes (stable vs canary, same input at the same moment):",
        f"  Pairs:         {probes.pairs_seen} done, {len(probes.pairs)} kept, {probes.late} late",
        f"  Agreement:     {_pct(s['agreement'])} of {s['pairs_both_ok']} pairs where both answered",
        f"  Accuracy:      stable {_pct(s['stable_accuracy'])}, canary {_pct(s['canary_accuracy'])}",
        f"  p99 (ms):      stable {_ms(probes.stable_latency.quantile(0.99))},"
        f" canary {_ms(probes.canary_latency.quantile(0.99))}",
    ]
    for name, codes in (("stable", probes.stable_errors_by_code), ("canary", probes.canary_errors_by_code)):
        if codes:
            text = ", ".join(f"[{c}] {n}" for c, n in sorted(codes.items()))
            lines.append(f"  {name} errors: {text}")
    return "\n".join(lines)


class Progress:
    """A live progress bar on stderr (tqdm): elapsed seconds of the timetable and counters."""

    def __init__(self, total_s: float, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self._bar = None
        self._done = 0.0
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=round(total_s, 1), unit="s", file=stream or sys.stderr,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s{postfix}", leave=False)

    def update(self, elapsed_s: float, counters: dict) -> None:
        """Show `elapsed_s` seconds done and the cumulative counters (sent, ok, errors, late)."""
        if self._bar is None:
            return
        step = max(0.0, min(elapsed_s, self._bar.total) - self._done)
        self._done += step
        self._bar.update(step)
        self._bar.set_postfix_str(
            f"sent={counters.get('sent', 0)} ok={counters.get('ok', 0)} "
            f"err={counters.get('errors', 0)} late={counters.get('late', 0)}", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
