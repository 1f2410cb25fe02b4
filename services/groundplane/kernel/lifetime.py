"""A child process that ends with its parent: the command line that arranges it.

On Linux :func:`dying_with_parent` puts a few lines of Python in front of a command: in the child's
own process they ask the kernel for SIGTERM when the parent dies
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``), refuse to start if the parent is already gone, then
``exec`` the command (same pid; the request survives ``exec``). Not in a ``preexec_fn``: that
makes Python ``fork`` instead of ``vfork``/``posix_spawn``, and gRPC's fork handlers in a parent
with an open channel then abort the child. Elsewhere the command is returned unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(1)  # the parent died before the call: do not start at all
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as error:
    print(f"groundplane: cannot run {sys.argv[2]!r}: {error}", file=sys.stderr)
    os._exit(127)
"""


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` behind the die-with-parent step on Linux; as it is elsewhere."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
