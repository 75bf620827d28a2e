"""Running host commands (limactl, incus, ssh) with errors that read as one line."""

import logging
import shlex
import subprocess
from collections.abc import Sequence

from corral.errors import ProviderError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    input: str | bytes | None = None,
    timeout: float | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command and return its result; on failure raise :class:`ProviderError`.

    + argv: the command and its arguments (never a shell string)
    + check: raise when the command exits non-zero
    + capture: keep stdout/stderr as text; when False they pass through to the user
    + input: text (or bytes) written to the command's standard input
    + timeout: seconds before the command is killed and the call fails
    + what: what the command was doing, for the error ("starting agent")

    The error carries the last meaningful line the command wrote on stderr.
    """
    log.debug("running %s", shlex.join(argv))
    text = not isinstance(input, bytes)
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=capture,
            text=text,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ProviderError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"{what or shlex.join(argv)}: no answer after {timeout:.0f}s") from None
    if check and result.returncode != 0:
        raise ProviderError(f"{what or shlex.join(argv[:3])}: {last_line(result.stderr)}")
    return result


def last_line(stderr: str | bytes | None) -> str:
    """The last non-empty line of a command's stderr, without Lima's ``level=fatal`` dress."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    if not lines:
        return "failed without a message"
    line = lines[-1]
    if "msg=" in line:
        # logrus format: time=... level=fatal msg="..."
        line = line.split("msg=", 1)[1].strip().strip('"')
    return line.removeprefix("Error: ")
