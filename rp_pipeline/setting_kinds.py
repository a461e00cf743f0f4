"""How a setting's text becomes a value: each `Kind` names what it expects ("a whole number >= 1")
and parses, raising ValueError when it cannot. `settings.py` declares every knob with one of these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

# A value longer than this is cut in the problem line: the line stays one readable line.
SHOWN_CHARS = 40


class SettingError(ValueError):
    """A bad setting; the message is one line naming the variable, its value and what is expected."""


@dataclass(frozen=True)
class Kind:
    """How a variable's text becomes a value: `parse` raises ValueError when it cannot."""

    expected: str  # completes "NAME must be ...", e.g. "a whole number >= 1"
    parse: Callable[[str], Any]


def whole(minimum: int = 1) -> Kind:
    def parse(raw: str) -> int:
        value = int(raw.replace("_", ""))
        if value < minimum:
            raise ValueError
        return value

    return Kind(f"a whole number >= {minimum}", parse)


def number(what: str = "a number", minimum: float = 0.0, *, above: bool = True) -> Kind:
    """A finite number > minimum (or >= with above=False)."""

    def parse(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise ValueError
        return value

    return Kind(f"{what} {'>' if above else '>='} {minimum:g}", parse)


# A pod kept idle for less than this could hardly be claimed before it ends itself (a claim
# needs a third of the idle time left): it would only bill.
MIN_IDLE_S = 15.0


def _idle_seconds(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0 or 0 < value < MIN_IDLE_S:
        raise ValueError
    return value


IDLE_TIME = Kind(
    f"0 (terminate at once) or at least {MIN_IDLE_S:g} seconds (a shorter idle time only "
    "bills: no run could adopt the pod in time)",
    _idle_seconds,
)


def choice(*options: str, aliases: Mapping[str, str] | None = None) -> Kind:
    """One of `options`, any case; `aliases` maps other spellings to an option."""
    known = {o: o for o in options} | dict(aliases or {})

    def parse(raw: str) -> str:
        return known[raw.lower()]

    return Kind(f"one of {', '.join(options)}", parse)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _flag(raw: str) -> bool:
    if raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise ValueError


FLAG = Kind("true or false (also 1/0, yes/no, on/off)", _flag)
TEXT = Kind("text", str)
NAMES = Kind(
    "a comma-separated list",
    lambda raw: [item.strip() for item in raw.split(",") if item.strip()] or _no_value(),
)


def _no_value() -> NoReturn:
    raise ValueError


def _cron(raw: str) -> str:
    from dagster import ScheduleDefinition

    try:  # the public check: Dagster refuses the schedule exactly as it would at load
        ScheduleDefinition(name="cron_check", cron_schedule=raw, job_name="cron_check")
    except Exception:
        raise ValueError from None
    return raw


CRON = Kind("a cron expression of 5 fields, e.g. '0 */6 * * *'", _cron)
# A number kept as its text: it is handed to a process (the pod) as an env value.
SECONDS_TEXT = Kind("a number of seconds >= 0", lambda raw: raw if float(raw) >= 0 else _no_value())
