"""What every store keeps, and the one interface the service uses (`Store`).

Records (`RunRecord`, `StoredWindow`), run statuses, the compressed JSON
format of stored verdicts and summaries (`pack_json` / `load_json`, with
its preset dictionary), and `Store`: the protocol both backends implement
(webhook/store/sqlite.py, webhook/store/postgres.py).

Times are unix seconds (float).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol


# A run's life: running (load on) -> idle (controller silent, load off;
# resumes on the next call) -> promoted (confirm-promotion passed: load off,
# decision frozen while the controller finalises) -> succeeded | failed
# (post-rollout said so).
RUN_STATUSES = ("running", "idle", "promoted", "succeeded", "failed")
FINAL_STATUSES = ("succeeded", "failed")
STOPPED_STATUSES = FINAL_STATUSES + ("promoted",)  # no session restarts for these

# What a store holds, per table (retention counts what it deletes by these names).
TABLES = ("runs", "windows", "checks", "timeline", "timeline_archive")


@dataclass
class RunRecord:
    """One rollout of one analysis."""

    id: str
    analysis: str
    caller: str  # flagger | argo
    namespace: str
    name: str
    revision: str  # Flagger checksum or Argo revision
    attempt: int = 1
    status: str = "running"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    verdict: dict[str, Any] | None = None  # run-level verdict (Verdict.to_dict())
    windows: int = 0
    state: dict[str, Any] | None = None  # the gate's RunState.to_dict(), stored after every window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StoredWindow:
    run_id: str
    seq: int
    kind: str  # interval | early | golden | final
    started_at: float
    ended_at: float
    verdict: dict[str, Any] | None
    data: bytes | None = None  # codec.encode_window bytes
    # What a report reads of `data`, kept when `data` is dropped (reporting.model.window_summary); windows(
    # with_data=True) returns it. Not named `summary`: that is the method below.
    raw_summary: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        v = self.verdict or {}
        return {"seq": self.seq, "kind": self.kind, "started_at": self.started_at, "ended_at": self.ended_at,
                "outcome": v.get("outcome"), "passed": v.get("passed"), "score": v.get("score"),
                "reason": v.get("reason"), "verdict": self.verdict}




class StoreUnavailable(Exception):
    """The store cannot be opened (the database refused, timed out, or a file cannot be created); the
    message names the store with its credentials redacted."""


class LeaseLost(Exception):
    """This replica no longer owns the run (its lease expired or was taken over, or the run ended):
    the window was not stored and the session must stop at once."""


@dataclass(frozen=True)
class Lease:
    """Who measures a run now. `owner` None: the run waits for a replica to claim it."""

    run_id: str
    owner: str | None
    expires_in_s: float  # by the database's clock; <= 0: expired (its owner is gone)
    epoch: int  # +1 at every claim

    @property
    def live(self) -> bool:
        return self.owner is not None and self.expires_in_s > 0


@dataclass(frozen=True)
class Renewal:
    """What one lease renewal learnt of a run this replica measures."""

    run_id: str
    since_call_s: float  # seconds since a hook on any replica last called for the run
    requests: tuple[tuple[str, str], ...] = ()  # (kind, arg) hooks on other replicas asked for, oldest first


class Store(Protocol):
    """What the service needs from persistence.

    The lease methods decide which process measures a live run. With one
    process (SQLite) it is always that process: `shared` is False and they
    are trivial. With PostgreSQL several replicas share the store and each
    live run has one lease row (owner, expiry by the database's clock).
    """

    shared: bool  # several processes use this store: leases decide who measures

    def create_run(self, run: RunRecord) -> None: ...
    def get_run(self, run_id: str) -> RunRecord | None: ...
    def find_run(self, caller: str, analysis: str, namespace: str, name: str, revision: str) -> RunRecord | None: ...
    def list_runs(self, analysis: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunRecord]: ...
    def update_run(self, run_id: str, *, status: str | None = None, verdict: dict[str, Any] | None = None,
                   state: dict[str, Any] | None = None) -> None: ...
    def add_window(self, window: StoredWindow, *, owner: str | None = None, state: dict[str, Any] | None = None,
                   run_verdict: dict[str, Any] | None = None) -> None:
        """Store a window (and the run's new gate state and verdict, in the same transaction).

        owner: the replica storing it; the window is stored only while it holds the run's lease, and
        (run_id, seq) is unique, so a window is never stored twice: LeaseLost otherwise."""
    def windows(self, run_id: str, with_data: bool = False) -> list[StoredWindow]: ...
    def add_event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None,
                  ts: float | None = None) -> None: ...
    def timeline(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...

    # -- leases: who measures a live run (SQLiteStore: this process, always)
    def heartbeat(self, replica: str, live_runs: int, ttl_s: float) -> None:
        """This replica is alive for `ttl_s` more seconds and measures `live_runs` runs."""
    def leave(self, replica: str) -> None:
        """This replica stops (its heartbeat row goes)."""
    def lease(self, run_id: str) -> Lease | None: ...
    def want_run(self, run_id: str) -> None:
        """The run should be measured: an unowned lease row, unless it has one."""
    def claim_run(self, run_id: str, replica: str, ttl_s: float, *, grace_s: float) -> bool:
        """Take the run's lease if it is free (unowned or expired) and this replica is the least-loaded
        live one (fewest live leases; ties by id), or it has been free for `grace_s` already. True: owned."""
    def claimable(self, limit: int = 100) -> list[str]:
        """Runs still running whose lease is free (unowned or expired), longest free first."""
    def renew_leases(self, replica: str, run_ids: list[str], ttl_s: float) -> dict[str, Renewal]:
        """Extend this replica's leases of `run_ids` by `ttl_s`; the runs missing from the answer are lost."""
    def release_run(self, run_id: str, replica: str) -> None:
        """Give the lease back, the run still to be measured (a replica stopping): another claims it at once."""
    def end_lease(self, run_id: str) -> None:
        """The run is no longer measured (idle, promoted, finished): its lease row and requests go."""
    def touch_run(self, run_id: str) -> None:
        """A hook called for the run (on any replica): its owner's idle clock restarts."""
    def request(self, run_id: str, kind: str, arg: str = "") -> None:
        """Ask the run's owner to apply a change a hook made on another replica (a stage, a rate, finality)."""
    def replicas(self) -> list[dict[str, Any]]:
        """The live replicas: id, live runs (live leases held), seconds since its heartbeat."""




# The preset dictionary of pack_json's format 1: a window's summary and stored verdict with every decimal
# number written 0 (bench/store_footprint.py dictionary_text; 9630 bytes, zlib + base85 here). It halves a
# verdict (11 kB of JSON: 2.3 kB with zlib alone, 1.1 kB with it) because keys, check names and the words of
# the reasons repeat in every window. NEVER CHANGE IT: rows written with it need it to be read. A better one
# is a new format byte (and this one stays for reading); tests/webhook/test_store_footprint.py pins its hash.
_ZDICT = (
    "c-rlmUvJws5Wv66K|oL!u~9jxlh{G~vORSeP&9oD3WJs?i!)8CBo#Xg{M~o_C&{VX+R2IztDj6#<neg-;~hyqBzMVV*iUjcr`jZw"
    "holxuN_4Ggo=il|c|XaFvLCb|Gft-&XW2q0le8aO*s@YoYbJ$n&WIrDzS}XhY<Jv50am!8pKDYA+t1S!M^L4t!rECZPG=}l=C(5q"
    "<it=XnF&KhZgutJs!=*!`bn#Cr#Oy9O_mj>R`Pg!wTY^IONI1@sbKq~q)N$|tv)0bVam7n6C(7Asvx$pbwL=nZLLu|EuoKM^AcTo"
    "c6r%!icMFSO)n`pF8iYC;_JhU&1UnE$l7FbiR(j^v`+f&$IfC@O|e!IZ9m@BS%wZRYK~nLVk1QuGJz3fiW!y>4p~W&1Q5~y(J&*q"
    "{ZW$h8OavVn^8ls`^n1*kSwbe$?hSAN}^%)HCQ_f+p@j}?+5&N63bI2GCMJa({=~~Yx_WntELK7i<&rNA==5LAY9`@bS5ji5LFB8"
    "#-&`K39RusF45W4D(4D0%@}%lO3;p@ezIaBm#b+>2{$E5z>(NUlwe|xF1-EZgxjh7CMuX9yq(vOIgLJ>qg$0+x_!umu8V?Yj0)qW"
    "5Kh!GNX$wi<`$LPhoFGdWr0Oh!D?tX7b;@t8iyyD6o!eK!r(1fuK+RN$H6GsIDypdQIsc$^LO+B3b~^yXPIdsh-Qo!G#+o<mMd8`"
    "zJuFX>NjnlKnfUMr76rM&#6ERRvLQ4vlMb>4VDvO5QML>LO4|hTDi@awyD7hHLeA-`YU3XbY{_hISe-z+`Rwr(W-+Jqm?qVt&-m+"
    ";C2oS!0!@YwUT4#O4|@(Az?*<n^t80i=Wp;5S(HeBSyy1;%Ptq)L^vr*{#u!536$(&XxPM3{UAD!WgG<EyNG8u8QRy6#MzKV@*us"
    "BCJDfJ+8#p+dSai-Q58=yqew-UN?XXy24dVXY^i*eA;U6h~M-Zz`}k$h_CnKad5z^;FffabghxAH4=q_U>v~K-(_drrDna87u~WF"
    "whJBDx~0XG6u6wj=Nd_6mJsV?=>17h`@aY8h*H!TxWg(z2LU>k;>HtDi-nLY0UDDa$^Q=wjk^q;U8dU*g@$iYG<q^cAvqrcQP{z5"
    "q;(o~IRazUi49LDfumu%H%NA1C;pu56MA;y<TZPtySnveOvoj}?D;E@G)%iFoexLbD20Y^q4fHhC^ZL(gP7_#tT~7{j6#??-IWVZ"
    "JIU}c<W6@azSBc8-`@Bw@z|ilDqh%Z=unH~9g%w;a`r}b2xh;1{Lnej!tHre?!y_D?Xm07JUASMfgP64)28i-EZNLxwGBz}mkMHA"
    ">F_n;vrSZN`7sF*t!QDw<Nws%JGOHp6NTIYEZjrd<jC#y-~!xOcOq77R$FoK#|`}cCWRjAjXsvuU<i1xD7>-axj2Qp7%m{i^ZSaK"
    "k_qrOHQYuQQ=(QS9<iaPXeE`QdEYTQN0*9u2ed`!{AE^h;4jQpkqQa-s(M9x7&~2^>ir1vMhy`8N()MO?qIR>1xda+z!XF^9`W@("
    "kn$ZHs-jQ_mallWx=Q$$gHF796s^7oR+uxgl|BiqVCloi3gc-$@Q&MJ>m3!Eiop%uYXw%3vaDnSjc03gZraCamdoO~IQ`YZsUyCW"
    "OF5^4GII~7k2SGc+IZE0D$sG{>R;!I%oU|e`{HpBSw0pugI$K~on2nNLancXa4uJP%YXX@u2T27^el)TB|lwSgk;e^9{5*0H;K!H"
    "7__L5O~=6WLjYo;s?9W4tT>RH^H;+Q?=EmMFrD#wDKIoySzzDdoCg&R-htWu7B#BIY}8xmm)Eeut3wn3<4H)C&t%QP)w0$Ifra)N"
    "&`oy?O$U*+&vB|bJ-Yup=x2XR*nZ=UPo@v;Q>iWQK47-`wGY2L0>P@hcYdaLl4>6zkxqn$>G)*3!c)Aa_-#fD=>YMT4}V68JvH%`"
    "+O5deq5126b$4ACu)lE8V;@=V;y)=rS-Hmmop+RLumAr|EyI6sKU1?WE;O!TgUb0B-1!sXco{k7{NrWhco{ifMvj+}<7MP{899>m"
    "l*`Cw^A9kcn?("
    )
ZDICT_V1 = zlib.decompress(base64.b85decode("".join(_ZDICT)))
_FORMAT_V1 = b"\x01"  # then raw deflate with ZDICT_V1. A plain zlib stream starts with 0x78 and is read too.


def pack_json(obj: Any) -> bytes:
    """How window verdicts, summaries and archived timelines are stored: compact JSON, deflated with a preset
    dictionary (format 1)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=ZDICT_V1)
    return _FORMAT_V1 + co.compress(json.dumps(obj, separators=(",", ":")).encode()) + co.flush()


def load_json(value: Any) -> Any:
    """A stored JSON value: `pack_json` bytes, or JSON text (rows written before compression); None stays None."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if b[:1] == _FORMAT_V1:
            do = zlib.decompressobj(-15, zdict=ZDICT_V1)
            return json.loads(do.decompress(b[1:]) + do.flush())
        return json.loads(zlib.decompress(b))
    return json.loads(value) if value else None


def _default_summarizer(data: bytes, *, seq: int, figures: bool) -> dict[str, Any]:
    from ..reporting.model import window_summary  # the report defines what it reads; imported when first needed

    return window_summary(data, seq=seq, figures=figures)


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None



def summarize_rows(summarize: Callable[..., dict[str, Any]], rows: list[tuple[int, str, bytes]],
                   figures_for: set[int]) -> list[tuple[int, int, bytes]]:
    """(seq, length of the raw data, packed summary) of raw windows `rows` (seq, kind, data), computed
    outside any lock or transaction. Windows in `figures_for` and golden windows keep their figures too."""
    out = []
    for seq, kind, data in rows:
        try:
            summary = summarize(data, seq=seq, figures=seq in figures_for or kind == "golden")
        except Exception as exc:  # a damaged blob: its figures were lost already
            summary = {"v": 1, "digest": None, "error": f"{exc.__class__.__name__}: {exc}"}
        out.append((seq, len(data), pack_json(summary)))
    return out
