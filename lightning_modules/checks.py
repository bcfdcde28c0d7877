"""Argument checks shared by the jobs: one line naming the key, the value and what was expected.

Every job validates its typed arguments in `__init__` (which must stay cheap: nothing is
loaded there), so a user's mistake is refused before anything runs or is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """Nested mappings / sequences (e.g. Hydra's DictConfig / ListConfig) as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Checker:
    """`check(name, value, ok, expected)` raising `ValueError("<owner>: <name> must be ...")`."""

    def __init__(self, owner: str):
        self.owner = owner

    def __call__(self, name: str, value: Any, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"{self.owner}: {name} must be {expected}, got {value!r}")

    def number(self, name: str, value: Any, low: float | None = None, *, strict: bool = False) -> float:
        """A finite number (>= low, or > low when strict)."""
        ok = is_number(value) and (
            low is None or (value > low if strict else value >= low)
        )
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        self(name, value, ok, f"a finite number{bound}")
        return float(value)

    def integer(self, name: str, value: Any, low: int) -> int:
        self(name, value, is_int(value) and value >= low, f"an int >= {low}")
        return int(value)

    def choice(self, name: str, value: Any, options: Sequence[str]) -> str:
        self(name, value, value in options, f"one of {tuple(options)}")
        return value

    def text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{self.owner}: {name} must be a str, got {value!r}")
        return value

    def spec(self, name: str, value: Any, required: bool = True) -> Any:
        """A checkpoint path (non-empty str) or an artifact spec (mapping); None if optional."""
        if value is None and not required:
            return None
        value = plain(value)
        if not isinstance(value, str | dict) or (isinstance(value, str) and not value):
            raise TypeError(
                f"{self.owner}: {name} must be a checkpoint path (str) or an artifact spec "
                f"(mapping){'' if required else ' or None'}, got {value!r}"
            )
        return value

    def policy_spec(self, value: Any) -> dict:
        """A policy spec `{"name": ..., **arguments}` (see `suite.policies`): the class must
        exist and take those arguments, checked before any run starts (nothing is built)."""
        import inspect

        from suite.policies import policy_class

        value = plain(value)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            raise ValueError(
                f"{self.owner}: policy must be a mapping with a 'name' (e.g. {{name: music, "
                f"checkpoint: ...}}), got {value!r}"
            )
        try:
            cls = policy_class(value["name"])
        except ValueError as err:
            raise ValueError(f"{self.owner}: {err}") from err
        params = inspect.signature(cls.from_spec).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(value) - {"name"} - set(params))
            if unknown:
                raise ValueError(
                    f"{self.owner}: policy {value['name']!r} takes {sorted(params)}, not {unknown}"
                )
        return value
