"""Argument checks shared by the worker and the operator."""
from __future__ import annotations

import re
from typing import Any

from .errors import ArgumentError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400,
}
_DURATION = re.compile(r"^\s*(?:[-+]?\d+(?:\.\d+)?\s*[a-z]+\s*)+$", re.I)
_PART = re.compile(r"([-+]?\d+(?:\.\d+)?)\s*([a-z]+)", re.I)


def describe(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return f"a bool ({v})"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__}"
    if isinstance(v, (int, float, str)):
        return f"a {type(v).__name__} ({str(v)[:40]})"
    return f"an object of class {type(v).__name__}"


def check_kind(kind: Any, what: str = "agent kind") -> str:
    """An agent kind as parflow_define accepts it (channel "parflow_<kind>" fits 63 bytes)."""
    if not isinstance(kind, str):
        raise ArgumentError(f"{what} must be a string, not {describe(kind)}")
    if kind.strip(" ") == "":
        raise ArgumentError(f"{what} must not be empty")
    if len(kind.encode()) > 55:
        raise ArgumentError(f'{what} "{kind[:20]}..." is longer than 55 bytes')
    if _CONTROL.search(kind):
        raise ArgumentError(f"{what} {kind!r} contains a control character")
    return kind


def check_name(v: Any, what: str) -> str:
    if not isinstance(v, str) or v.strip() == "":
        raise ArgumentError(f"{what} must be a non-empty string, not {describe(v)}")
    return v


def seconds(v: Any, what: str) -> float:
    """Seconds of a duration: a number of seconds or a string such as "5 min"."""
    if isinstance(v, bool):
        raise ArgumentError(f"{what} must be a number of seconds or a string such as \"5 min\", not {describe(v)}")
    if isinstance(v, (int, float)):
        s = float(v)
    elif isinstance(v, str):
        if not _DURATION.match(v):
            raise ArgumentError(f'{what} {v!r} is not a duration such as "5 min" or "90 s"')
        s = 0.0
        for num, unit in _PART.findall(v):
            if unit.lower() not in _UNITS:
                raise ArgumentError(f'{what} {v!r}: unknown unit "{unit}"')
            s += float(num) * _UNITS[unit.lower()]
    else:
        raise ArgumentError(f"{what} must be a number of seconds or a string such as \"5 min\", not {describe(v)}")
    if not s > 0 or s != s or s == float("inf"):
        raise ArgumentError(f"{what} must be positive (found {v!r})")
    return s


def positive_int(v: Any, what: str, maximum: int = 2147483647) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > maximum:
        raise ArgumentError(f"{what} must be an integer from 1 to {maximum} (found {v!r})")
    return v
