"""What `lobell sweep` searches: KEY=v1,v2,... lists and KEY=low..high ranges, parsed and checked (no Optuna, no torch)."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

from lobell.errors import LobellError


@dataclass
class Space:
    """One searched key: listed `values` (kept as the command line spelled them), or a range."""

    key: str
    values: list[str] | None = None
    low: float | None = None
    high: float | None = None
    integer: bool = False
    log: bool = False

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.key} in {{{', '.join(self.values)}}}"
        return f"{self.key} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


def parse_items(items: list[str]) -> tuple[list[str], list[Space]]:
    """(plain KEY=VALUE overrides, searched keys): a value with a comma is a list, `a..b` a range."""
    plain, spaces = [], []
    for item in items:
        key, _, value = item.partition("=")
        if "," in value:
            values = [v.strip() for v in value.split(",")]
            if any(not v for v in values) or len(set(values)) != len(values):
                raise LobellError(f"'{item}': list each value once, separated by commas (e.g. {key}=1e-4,3e-4)")
            spaces.append(Space(key, values=values))
        elif ".." in value:
            spaces.append(_range(item, key, value))
        else:
            plain.append(item)
    if not spaces:
        raise LobellError("lobell sweep needs at least one searched key: KEY=v1,v2,... or KEY=low..high "
                          "(e.g. optimizer.lr=1e-4..1e-2)")
    if len({s.key for s in spaces}) != len(spaces):
        raise LobellError("a key is searched twice: name each searched key once")
    return plain, spaces


def _range(item: str, key: str, value: str) -> Space:
    low_text, _, high_text = value.partition("..")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise LobellError(f"'{item}': a range is two numbers, low..high (e.g. {key}=1e-4..1e-2)") from None
    if not low < high:
        raise LobellError(f"'{item}': the range's low end must be below its high end")
    integer = all(part.strip().lstrip("-").isdigit() for part in (low_text, high_text))
    return Space(key, low=low, high=high, integer=integer, log=low > 0 and high / low >= 10)


def is_grid(spaces: list[Space]) -> bool:
    return all(space.values is not None for space in spaces)


def grid_size(spaces: list[Space]) -> int:
    return math.prod(len(space.values) for space in spaces)


def combinations(spaces: list[Space]) -> list[dict]:
    """Every grid point, in order (for tests and docs: what grid mode covers)."""
    return [dict(zip((s.key for s in spaces), values)) for values in itertools.product(*(s.values for s in spaces))]


def space_json(spaces: list[Space]) -> list[dict]:
    return [asdict(space) for space in spaces]
