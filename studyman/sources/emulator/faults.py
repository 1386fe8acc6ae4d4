"""Fault injection: the ways a real REDCap (or the proxy in front of it) fails, on purpose.

A :class:`FaultPlan` says which faults to inject; a :class:`FaultInjector` draws them, one per
call, from a seeded random generator, so a sequential client sees the same faults in the same
order on every run. An explicit ``schedule`` is consumed first (one entry per eligible call),
then the rates apply. A control file (JSON with the same keys as :class:`FaultPlan`) replaces the
plan whenever its modification time changes, and restarts the draw; an empty or missing file means
no faults.

Fault names
-----------
``ok`` no fault · ``500`` REDCap's error body (requested format) with status 500 · ``500html`` an
HTML 500 page · ``502`` / ``504`` a proxy's HTML page · ``429`` REDCap's plain-text ban ·
``timeout`` the server hangs (``hang_seconds``) and closes without answering · ``truncate`` the
``Content-Length`` promises the whole body but half is sent before the connection closes · ``cut``
the body is cut in half and the ``Content-Length`` matches, so the client receives broken
JSON or CSV with a 200 status. ``cut_at`` moves the cut of ``truncate`` and ``cut`` to a chosen
byte (for example a line end, where a cut CSV still parses).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass, fields
from pathlib import Path

from studyman.errors import StudymanError

__all__ = ["FAULT_NAMES", "FaultInjector", "FaultPlan"]

_logger = logging.getLogger(__name__)

FAULT_NAMES = ("ok", "500", "500html", "502", "504", "429", "timeout", "truncate", "cut")


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject and how often (rates are probabilities per eligible call).

    Parameters
    ----------
    seed
        Seed of the draw.
    error_rate, bad_gateway_rate, gateway_timeout_rate, ban_rate, timeout_rate, truncate_rate
        Rates of ``500``, ``502``, ``504``, ``429``, ``timeout`` and truncated answers.
    truncate_mode
        ``truncate`` (short body, long Content-Length) or ``cut`` (consistently cut body).
    latency
        Seconds added before every answer.
    hang_seconds
        How long a ``timeout`` hangs (longer than the client's timeout).
    schedule
        Faults for the first eligible calls, in order (names from ``FAULT_NAMES``).
    contents
        Only calls with these ``content`` values are eligible (empty: every call).
    ban_after
        Every eligible call after this many gets ``429`` (REDCap's rate limit).
    cut_at
        Bytes of the body a ``truncate`` or ``cut`` fault keeps (at most all but the last one);
        default: half the body.
    """

    seed: int = 0
    error_rate: float = 0.0
    bad_gateway_rate: float = 0.0
    gateway_timeout_rate: float = 0.0
    ban_rate: float = 0.0
    timeout_rate: float = 0.0
    truncate_rate: float = 0.0
    truncate_mode: str = "truncate"
    latency: float = 0.0
    hang_seconds: float = 30.0
    schedule: tuple[str, ...] = ()
    contents: tuple[str, ...] = ()
    ban_after: int | None = None
    cut_at: int | None = None

    def __post_init__(self) -> None:
        if self.cut_at is not None and (
            isinstance(self.cut_at, bool) or not isinstance(self.cut_at, int) or self.cut_at < 0
        ):
            raise StudymanError(
                f"cut_at must be a non-negative whole number of bytes, not {self.cut_at!r}"
            )
        for name in self.schedule:
            if name not in FAULT_NAMES:
                raise StudymanError(
                    f"unknown fault {name!r} in the schedule; "
                    f"expected one of {', '.join(FAULT_NAMES)}"
                )
        if self.truncate_mode not in ("truncate", "cut"):
            raise StudymanError("truncate_mode must be 'truncate' or 'cut'")
        rates = (
            self.error_rate,
            self.bad_gateway_rate,
            self.gateway_timeout_rate,
            self.ban_rate,
            self.timeout_rate,
            self.truncate_rate,
        )
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise StudymanError("fault rates must be non-negative and sum to at most 1")

    def kept_bytes(self, size: int) -> int:
        """How many of a *size*-byte body a ``truncate`` or ``cut`` fault sends."""
        if self.cut_at is None:
            return size // 2
        return max(0, min(self.cut_at, size - 1))

    @classmethod
    def from_mapping(cls, values: dict[str, object], source: str = "fault plan") -> FaultPlan:
        """Build a plan from JSON-like values, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StudymanError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(known))}"
            )
        cleaned: dict[str, object] = dict(values)
        for key in ("schedule", "contents"):
            if key in cleaned:
                value = cleaned[key]
                if not isinstance(value, list | tuple):
                    raise StudymanError(f"{source}: {key} must be a list")
                cleaned[key] = tuple(str(v) for v in value)
        try:
            return cls(**cleaned)  # type: ignore[arg-type]
        except (TypeError, StudymanError) as error:
            raise StudymanError(f"{source}: {error}") from None


class FaultInjector:
    """Draws one fault per call from a plan (thread-safe, deterministic for a seed)."""

    def __init__(self, plan: FaultPlan | None = None, control_file: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._control_file = Path(control_file) if control_file else None
        self._control_mtime: tuple[int, int] | None = None
        self._set(plan or FaultPlan())
        # A control file that is wrong from the start is the caller's error, raised here (so
        # `emulator serve --faults F` refuses it in one line); later edits are checked in draw.
        self._reload()

    def _set(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._random = random.Random(plan.seed)
        self._calls = 0

    def set_plan(self, plan: FaultPlan | None) -> None:
        """Replace the plan and restart the draw."""
        with self._lock:
            self._set(plan or FaultPlan())

    def _reload(self) -> None:
        if self._control_file is None:
            return
        try:
            status = self._control_file.stat()
            # Size too: two writes within the file system's timestamp granularity differ in it.
            mtime = (status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            if self._control_mtime is not None:
                self._control_mtime = None
                self._set(FaultPlan())
            return
        if mtime == self._control_mtime:
            return
        self._control_mtime = mtime
        try:
            text = self._control_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise StudymanError(
                f"{self._control_file}: cannot read the fault plan ({error})"
            ) from None
        if not text:
            self._set(FaultPlan())
            return
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            # A half-written control file: keep the current plan until it is complete.
            self._control_mtime = None
            return
        if not isinstance(values, dict):
            raise StudymanError(f"{self._control_file}: expected a JSON object")
        self._set(FaultPlan.from_mapping(values, str(self._control_file)))

    def draw(self, content: str) -> tuple[str, FaultPlan]:
        """The fault for one call with this ``content`` (``"ok"``: none) and the plan in force."""
        with self._lock:
            try:
                self._reload()
            except StudymanError as error:
                # An edited control file that is wrong: keep the plan in force, say why once.
                _logger.warning("emulator: fault plan not changed: %s", error)
            plan = self.plan
            if plan.contents and content not in plan.contents:
                return "ok", plan
            call = self._calls
            self._calls += 1
            if call < len(plan.schedule):
                return plan.schedule[call], plan
            if plan.ban_after is not None and call >= plan.ban_after:
                return "429", plan
            draw = self._random.random()
            for name, rate in (
                ("500", plan.error_rate),
                ("502", plan.bad_gateway_rate),
                ("504", plan.gateway_timeout_rate),
                ("429", plan.ban_rate),
                ("timeout", plan.timeout_rate),
                (plan.truncate_mode, plan.truncate_rate),
            ):
                if draw < rate:
                    return name, plan
                draw -= rate
            return "ok", plan
