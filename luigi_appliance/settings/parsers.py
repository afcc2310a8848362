"""Value parsers shared by every section: each takes the text as written and returns the typed
value, or raises ValueError whose text says what was expected (it becomes the issue's message)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path


def parse_bool(value: str) -> bool:
    low = value.lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer between {lo} and {hi}, got {value!r}") from None
        if not lo <= number <= hi:
            raise ValueError(f"expected an integer between {lo} and {hi}, got {number}")
        return number
    return parse


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``2h`` or ``90d``."""
    m = _DURATION.match(value.strip().lower())
    if not m:
        raise ValueError(f"expected a duration such as 30, 30s, 5m, 2h or 90d, got {value!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def duration_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"expected a duration between {lo:g}s and {hi:g}s, got {seconds:g}s")
        return seconds
    return parse


_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$")
_SIZE_FACTORS = {None: 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str) -> int:
    """Bytes from ``1048576``, ``512k``, ``64M``, ``2G`` (binary multiples; ``MiB``/``MB`` alike)."""
    m = _SIZE.match(value.strip().lower())
    if not m:
        raise ValueError(f"expected a size such as 1048576, 512k, 64M or 2G, got {value!r}")
    unit = m.group(2)[0] if m.group(2) else None
    return int(m.group(1)) * _SIZE_FACTORS[unit]


def size_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        size = parse_size(value)
        if not lo <= size <= hi:
            raise ValueError(f"expected a size between {lo} and {hi} bytes, got {size}")
        return size
    return parse


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        low = value.lower()
        if low not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return low
    return parse


def parse_path(value: str) -> Path:
    if not value:
        raise ValueError("expected a path, got an empty value")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path, got {value!r}")
    return path


def parse_regex(value: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ValueError(f"expected a regular expression: {exc}") from None
    if not (value.startswith("^") and value.endswith("$")):
        raise ValueError(f"expected a pattern anchored with ^ and $, got {value!r}")
    return pattern


def split_list(value: str) -> tuple[str, ...]:
    """The items of a list separated by blanks or commas (empty items dropped)."""
    return tuple(item for item in re.split(r"[\s,]+", value.strip()) if item)
