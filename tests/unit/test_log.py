"""ossmount.log: the WARNING rate limit, journald priority prefixes, and redaction on the
handler `setup_logging` installs."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.log import (
    KernelGaveUpFilter,
    OneLineFilter,
    RateLimitFilter,
    flush_suppressed,
    open_private,
    setup_logging,
)
from ossmount.oss.redact import RedactingFilter, register_secret


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def setup(clock: Clock) -> Iterator[tuple[logging.Logger, Collect, RateLimitFilter]]:
    handler = Collect()
    limiter = RateLimitFilter(burst=3, period_s=60.0, clock=clock)
    limiter.emit = handler.handle
    handler.addFilter(limiter)
    logger = logging.getLogger("test.ratelimit")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, handler, limiter
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_warning_storm_is_cut_to_the_burst_then_summarised(
    setup: tuple[logging.Logger, Collect, RateLimitFilter], clock: Clock
) -> None:
    logger, out, _ = setup
    for part in range(10):
        logger.warning("oss://%s/%s: part %d failed", "bkt", "key", part)
        clock.now += 1
    expected = [f"WARNING test.ratelimit: oss://bkt/key: part {i} failed" for i in range(3)]
    assert out.lines == expected
    clock.now += 60
    logger.info("something else")
    assert out.lines[3:] == [
        "WARNING test.ratelimit: suppressed 7 similar messages in the last 70 s: "
        "oss://%s/%s: part %d failed",
        "INFO test.ratelimit: something else",
    ]


def test_a_new_window_passes_a_burst_again_after_its_summary(
    setup: tuple[logging.Logger, Collect, RateLimitFilter], clock: Clock
) -> None:
    logger, out, _ = setup
    for _ in range(5):
        logger.warning("retrying %s", "x")
    clock.now += 61
    logger.warning("retrying %s", "y")
    assert out.lines[3].startswith("WARNING test.ratelimit: suppressed 2 similar messages")
    assert out.lines[4] == "WARNING test.ratelimit: retrying y"


def test_templates_and_loggers_are_limited_separately_and_errors_never(
    setup: tuple[logging.Logger, Collect, RateLimitFilter],
) -> None:
    logger, out, limiter = setup
    other = logging.getLogger("test.ratelimit.other")
    for _ in range(5):
        logger.warning("first %d", 1)
        logger.warning("second %d", 2)
        other.warning("first %d", 1)  # propagates to the handler through `logger`
        logger.error("bad %d", 3)
        logger.info("fine")
    assert sum("first" in line and "ratelimit:" in line for line in out.lines) == 3
    assert sum("first" in line and "other:" in line for line in out.lines) == 3
    assert sum("second" in line for line in out.lines) == 3
    assert sum("bad 3" in line for line in out.lines) == 5
    assert sum(line.endswith("fine") for line in out.lines) == 5
    limiter.flush()
    summaries = [line for line in out.lines if "suppressed" in line]
    assert len(summaries) == 3
    assert all("suppressed 2 similar messages" in line for line in summaries)


def test_flush_reports_nothing_when_nothing_was_suppressed(
    setup: tuple[logging.Logger, Collect, RateLimitFilter],
) -> None:
    logger, out, limiter = setup
    logger.warning("once")
    limiter.flush()
    assert out.lines == ["WARNING test.ratelimit: once"]


def test_the_key_table_is_bounded(clock: Clock) -> None:
    limiter = RateLimitFilter(burst=1, period_s=60.0, clock=clock)
    for i in range(RateLimitFilter.MAX_KEYS + 50):
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, f"msg {i}", None, None)
        assert limiter.filter(record)
    assert len(limiter._windows) == RateLimitFilter.MAX_KEYS


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    flush_suppressed()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_setup_logging_installs_rate_limit_then_redaction(
    tmp_path: Path, restore_root: None
) -> None:
    log_file = tmp_path / "log"
    setup_logging("DEBUG", foreground=True, log_file=log_file)
    (handler,) = logging.getLogger().handlers
    kinds = [type(f) for f in handler.filters]
    assert kinds == [RateLimitFilter, RedactingFilter, OneLineFilter]
    secret = "unit-test-secret-value-42"
    register_secret(secret)
    logging.getLogger("ossmount.test").warning("leaked %s?", secret)
    for _ in range(10):
        logging.getLogger("ossmount.test").warning("storm")
    text = log_file.read_text()
    assert secret not in text
    assert "leaked [REDACTED]?" in text
    assert text.count("storm") == 5
    flush_suppressed()
    assert "suppressed 5 similar messages in the last 0 s: storm" in log_file.read_text()


def test_journald_priority_prefixes_under_systemd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_root: None
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging("DEBUG", foreground=True)
    log = logging.getLogger("ossmount.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e\nsecond line")  # a message is one line: the newline is escaped
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("x")  # a traceback keeps its lines, each with the priority
    lines = capsys.readouterr().err.splitlines()
    assert lines[:5] == [
        "<7>ossmount.test: d",
        "<6>ossmount.test: i",
        "<4>ossmount.test: w",
        "<3>ossmount.test: e\\nsecond line",
        "<3>ossmount.test: x",
    ]
    assert lines[5] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in lines[5:])


def test_a_key_cannot_forge_a_log_line_or_send_escape_sequences(
    tmp_path: Path, restore_root: None
) -> None:
    log_file = tmp_path / "log"
    setup_logging("INFO", foreground=True, log_file=log_file)
    key = "evil\n2026-01-01 00:00:00,000 1 ERROR ossmount: forged\x1b[31m\x00"
    logging.getLogger("ossmount.test").warning("cannot read oss://b/%s", key)
    (line,) = log_file.read_text().splitlines()
    assert line.endswith(
        "cannot read oss://b/evil\\n2026-01-01 00:00:00,000 1 ERROR ossmount: forged\\x1b[31m\\x00"
    )


def test_plain_lines_without_systemd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_root: None
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    setup_logging("INFO", foreground=True)
    logging.getLogger("ossmount.test").warning("w")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING ossmount.test: w")
    assert not line.startswith("<")


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_reply_the_kernel_gave_up_on_is_debug_not_error(
    tmp_path: Path, restore_root: None, level: str
) -> None:
    log_file = tmp_path / "log"
    setup_logging(level, foreground=True, log_file=log_file)
    fuse_log = logging.getLogger("pyfuse3")
    assert sum(isinstance(f, KernelGaveUpFilter) for f in fuse_log.filters) == 1
    fuse_log.error("fuse_%s(): fuse_reply_* failed with %s", "release", "No such file or directory")
    fuse_log.error("fuse_%s(): fuse_reply_* failed with %s", "read", "Invalid argument")
    text = log_file.read_text()
    assert "ERROR pyfuse3: fuse_read(): fuse_reply_* failed with Invalid argument" in text
    assert "ERROR pyfuse3: fuse_release()" not in text
    gave_up = "DEBUG pyfuse3: fuse_release(): fuse_reply_* failed with No such file or directory"
    assert (gave_up in text) == (level == "DEBUG")
    assert ("the kernel no longer waited for this reply" in text) == (level == "DEBUG")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_log_file_is_created_private(
    tmp_path: Path, restore_root: None, umask_022: None
) -> None:
    """Issue 14 finding 8: the log names buckets and keys; a file we create is 0600 (it was
    0644 under the usual umask), and so is the SIGUSR1 stack dump's."""
    created = tmp_path / "new.log"
    setup_logging("INFO", foreground=True, log_file=created)
    logging.getLogger("ossmount.test").warning("oss://b/private-key-name")
    assert stat.S_IMODE(created.stat().st_mode) == 0o600
    assert "private-key-name" in created.read_text()
    with open_private(tmp_path / "stacks.log") as stacks:
        assert stat.S_IMODE(os.fstat(stacks.fileno()).st_mode) == 0o600


def test_an_existing_log_file_keeps_its_mode_and_lines(
    tmp_path: Path, restore_root: None, umask_022: None
) -> None:
    shared = tmp_path / "shared.log"
    shared.write_text("earlier line\n")
    shared.chmod(0o640)
    setup_logging("INFO", foreground=True, log_file=shared)
    logging.getLogger("ossmount.test").warning("appended")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert shared.read_text().startswith("earlier line\n")
    assert "appended" in shared.read_text()
