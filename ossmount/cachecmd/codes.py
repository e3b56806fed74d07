"""Exit codes of the cache commands and the error that carries one.

They reuse the mount's numbers where the meaning is the same (2 usage, 7 not a mount, 8 cache
dir unusable or in use) so a script that knows `ossmount --help` reads them the same way; 11
and 12 are outcomes the mount never has, numbered past the mount's last code (10, a bad
reply from the endpoint) so that no number means two things.
"""

from __future__ import annotations

import enum

from ossmount.errors import OperatorError

__all__ = ["EXIT_HELP", "CommandError", "Exit"]


class Exit(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: a traceback was printed
    USAGE = 2
    NOT_A_MOUNT = 7  # warmup: PATH is not on an ossmount mount
    CACHE = 8  # cache dir missing a layout we know, unreadable, or held by a mount
    FAILED = 11  # verify found (and dropped) damage; warmup: some files failed
    TOO_BIG = 12  # warmup: the tree cannot fit the mount's cache
    INTERRUPTED = 130  # Ctrl-C


EXIT_HELP = """exit codes:
  0   done, nothing wrong found
  2   bad usage
  7   (warmup) PATH is not on an ossmount mount
  8   the cache dir is in use by a mount (its PID is named), or unusable
  11  verify: damaged data was found and dropped / warmup: some files failed
  12  warmup: the tree is bigger than the mount's cache can hold
  130 interrupted"""


class CommandError(OperatorError[Exit]):
    """A cache command failed in a way the operator must act on."""
