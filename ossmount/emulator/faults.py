"""Declarative, counted fault rules (never random): match a request, then act on its response.

A rule matches by operation name (``GetObject``, ``HeadObject``, ``ListObjectsV2``, ...),
bucket glob and key glob. Every matching request increments ``seen``; the rule *fires* when
``seen > skip``, ``seen == nth`` (if ``nth`` is set) and ``fired < times`` (``times=None``:
forever). Several rules may fire on one request (e.g. a stall and a wrong CRC).

Actions (``action=``):
* ``error``: respond ``status`` with OSS ``code`` (and ``message``) instead of the operation.
* ``reset``: send ``after`` body bytes, then reset the connection (RST).
  On uploads (PutObject, UploadPart, AppendObject) ``reset``, ``truncate`` and ``stall`` act
  on the *request* body instead, at ``after`` bytes received (see receive.py): the
  connection ends there with nothing committed, or reading pauses for ``seconds``.
* ``truncate``: send ``after`` body bytes, then close the connection cleanly (FIN) short of
  Content-Length.
* ``stall``: send ``after`` body bytes, sleep ``seconds``, then continue.
* ``flip``: invert the body byte at offset ``after`` (offset within this response's body).
* ``wrong-crc`` / ``missing-crc``: send a wrong / no ``x-oss-hash-crc64ecma`` header.
* ``replace``: before this request is served, replace the object with new content of the same
  size (new ETag and Last-Modified). ``skip=N`` makes it "after N requests".
* ``latency``: sleep ``seconds`` before answering.
* ``gzip``: answer as OSS does to ``Accept-Encoding: gzip`` for text types (chunked, gzip, no
  ETag/Content-Length) whenever the request allows gzip — the §8.8 opt-in mode.

Spec strings (CLI ``--fault`` and the admin endpoint) are ``key=value`` pairs joined by commas,
e.g. ``action=reset,op=GetObject,key=big/*,after=1048576,times=1``.

Concurrency: rules are shared between the trio thread and test threads; ``Faults.lock`` guards
the rule list and every counter update (held only for arithmetic, never across I/O).
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ACTIONS", "FaultRule", "Faults", "parse_rule"]

ACTIONS = frozenset(
    {
        "error",
        "reset",
        "truncate",
        "stall",
        "flip",
        "wrong-crc",
        "missing-crc",
        "replace",
        "latency",
        "gzip",
    }
)


@dataclass
class FaultRule:
    action: str
    op: str = "*"
    key: str = "*"
    bucket: str = "*"
    nth: int | None = None
    skip: int = 0
    times: int | None = 1
    status: int = 500
    code: str = "InternalError"
    message: str | None = None
    after: int = 0
    seconds: float = 0.0
    # Counters, updated under Faults.lock.
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {sorted(ACTIONS)}")
        if self.skip < 0 or self.after < 0 or self.seconds < 0:
            raise ValueError("skip, after and seconds must be >= 0")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")

    def matches(self, op: str, bucket: str, key: str) -> bool:
        return (
            fnmatch.fnmatchcase(op, self.op)
            and fnmatch.fnmatchcase(bucket, self.bucket)
            and fnmatch.fnmatchcase(key, self.key)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_INT_FIELDS = {"nth", "skip", "times", "status", "after"}


def parse_rule(spec: str) -> FaultRule:
    """``action=reset,op=GetObject,after=100`` → FaultRule. ``times=inf`` means forever."""
    kwargs: dict[str, Any] = {}
    names = {f.name for f in fields(FaultRule)} - {"seen", "fired"}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names:
            raise ValueError(f"bad fault spec element {part!r}")
        value = value.strip()
        if name == "times" and value in ("inf", "none", "always"):
            kwargs[name] = None
        elif name in _INT_FIELDS:
            kwargs[name] = int(value)
        elif name == "seconds":
            kwargs[name] = float(value)
        else:
            kwargs[name] = value
    if "action" not in kwargs:
        raise ValueError("fault spec needs action=")
    return FaultRule(**kwargs)


class Faults:
    """The rule set: ``add``, ``clear``, ``remove``; ``fire`` is called once per request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule | str) -> FaultRule:
        if isinstance(rule, str):
            rule = parse_rule(rule)
        with self.lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self.lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        with self.lock:
            self._rules = []

    def __iter__(self) -> Iterator[FaultRule]:
        with self.lock:
            return iter(list(self._rules))

    def __len__(self) -> int:
        return len(self._rules)

    def fire(self, op: str, bucket: str, key: str) -> list[FaultRule]:
        """Count this request against every matching rule; return the rules that fire."""
        if not self._rules:
            return []
        out: list[FaultRule] = []
        with self.lock:
            for rule in self._rules:
                if not rule.matches(op, bucket, key):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                if rule.nth is not None and rule.seen != rule.nth:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                rule.fired += 1
                out.append(rule)
        return out
