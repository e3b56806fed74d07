"""How a mount option is declared, and how its text becomes a checked value.

`ossmount.config` declares every option as a `MountConfig` field with `option(...)`; this
module holds what such a declaration is (`Option`) and the converters, each of which raises
ValueError with a short reason that the config turns into a usage error naming the option.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from ossmount.oss.addressing import is_http_url

__all__ = [
    "OPTION_KEY",
    "Option",
    "choice",
    "command",
    "host_port",
    "http_url",
    "log_level",
    "non_negative_float",
    "non_negative_int",
    "octal",
    "option",
    "positive_float",
    "positive_int",
    "seconds",
]


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def octal(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise ValueError("must be an octal mode such as 022")
    return value


def choice(literal: Any) -> Callable[[str], str]:
    """A converter accepting exactly the values of a `Literal[...]` type."""
    choices: tuple[str, ...] = get_args(literal)

    def convert(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return convert


def log_level(text: str) -> str:
    # ossfs's dbglevel names (crit/err/warn/info/debug) and the logging module's.
    aliases = {"crit": "CRITICAL", "err": "ERROR", "warn": "WARNING", "dbg": "DEBUG"}
    level = aliases.get(text.lower(), text.upper())
    if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
        raise ValueError("must be one of debug, info, warning, error, critical")
    return level


def _str(text: str) -> str:
    return text


def command(text: str) -> str:
    argv = shlex.split(text)  # ValueError (unbalanced quotes) becomes a usage error
    if not argv:
        raise ValueError("must name a command")
    return text


def http_url(text: str) -> str:
    if not is_http_url(text):
        raise ValueError("must be a URL such as http://100.100.100.200")
    return text.rstrip("/")


def host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IP address, `[v6]:PORT` or localhost) → (host, port); port 0: any."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise ValueError("must be HOST:PORT, such as 127.0.0.1:9464")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address such as 127.0.0.1") from None
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad port {port!r}: must be 0-65535")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Option:
    """One mount option, read off its `MountConfig` field (`name`, which names its flag too).

    `default` None means "derived at build time" (see `build_config`) or "off". `o_names` are
    the extra spellings accepted in `-o`; a `switch` takes no value there (`allow_other`).
    `shown_default` is how `--help` and the README show the default when `str()` would not do.
    """

    help: str
    default: Any
    convert: Callable[[str], Any] = _str
    o_names: tuple[str, ...] = ()
    switch: bool = False
    metavar: str | None = None
    shown_default: str | None = None
    name: str = ""

    @property
    def all_o_names(self) -> tuple[str, ...]:
        return (self.name, *self.o_names)

    @property
    def long_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str | None:
        """The default as shown to people, None when there is nothing to show."""
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default is False:
            return None
        return str(self.default)

    @property
    def help_line(self) -> str:
        """`--help` text: what it does, its default, its `-o` spellings."""
        default = f" (default: {self.default_text})" if self.default_text is not None else ""
        names = "/".join(self.all_o_names)
        return f"{self.help}{default}; -o {names}" + ("" if self.switch else "=…")


OPTION_KEY = "ossmount.option"


def option(
    help: str,
    default: Any = None,
    convert: Callable[[str], Any] = _str,
    *,
    o_names: tuple[str, ...] = (),
    switch: bool = False,
    metavar: str | None = None,
    shown_default: str | None = None,
) -> Any:
    """`name: T = option(...)` declares a `MountConfig` field as a mount option: a dataclass
    field (no dataclass default: `build_config` fills every one) carrying its `Option`. Typed
    Any, like `dataclasses.field`, so the annotation states the field's type."""
    meta = {OPTION_KEY: Option(help, default, convert, o_names, switch, metavar, shown_default)}
    return field(metadata=meta)


def seconds(help: str, default: float) -> Any:
    return option(help, default, non_negative_float, metavar="SECONDS")
