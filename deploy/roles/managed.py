"""Files, links and folders the roles manage, decided from the one probe of the guest.

pyinfra's own files.* operations ask the guest about each path (two or three round trips
through sudo per file). The probe already reports every managed path's sha256, mode and
owner, so a run with nothing to do asks nothing more. A path the probe does not cover is
looked up with pyinfra's facts, as usual.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import File, Link, Sha256File

from deploy.roles.common import probe


def _home(path: str) -> str:
    """``~/x`` made absolute with the agent's home (from the probe)."""
    if path.startswith("~/"):
        return f"{probe()['agent_home']}/{path[2:]}"
    return path


def _file_state(path: str) -> tuple[str, str, str] | None:
    """(sha256, mode, owner) of ``path``, from the probe or else from pyinfra's facts."""
    probed = probe().get("files", {})
    if path in probed:
        return probed[path]
    absolute = _home(path)
    info = host.get_fact(File, path=absolute)
    if not info:
        return None
    return (host.get_fact(Sha256File, path=absolute) or "", str(info["mode"]), info["user"])


def file_matches(guest: dict, path: str, content: str, mode: str = "644",
                 user: str = "root") -> bool:
    """Whether the probe saw ``path`` with exactly ``content``, ``mode`` and ``user``."""
    digest = hashlib.sha256(content.encode()).hexdigest()
    return guest.get("files", {}).get(path) == (digest, mode.lstrip("0") or "0", user)


@operation(is_idempotent=True)
def text_file(path: str, content: str, mode: str = "644", user: str = "root",
              private: bool = False):
    """Ensure ``path`` holds ``content`` with ``mode`` and ``user``; never shows a diff.

    + path: absolute, or ``~/...`` for the agent's home
    + content: the text
    + mode: octal digits, e.g. ``"644"``
    + user: the owner
    + private: create the file empty and 0600 before filling it (for secrets), staging the
      upload in a 0700 folder of the SSH user
    """
    digest = hashlib.sha256(content.encode()).hexdigest()
    if _file_state(path) == (digest, mode.lstrip("0") or "0", user):
        host.noop(f"{path}: as wanted, nothing to do")
        return

    dest = _home(path)
    q = shlex.quote
    folder = posixpath.dirname(dest)
    if private:
        # Create the file empty and private first, so no copy of it is ever readable.
        yield StringCommand(f"install -d -m 0700 -o {q(user)} {q(folder)} && "
                            f"(umask 077 && : > {q(dest)}) && chown {q(user)} {q(dest)}")
        yield StringCommand("mkdir -p -m 0700 .cache/corral-upload", _sudo=False)
        yield FileUploadCommand(StringIO(content), dest,
                                remote_temp_filename=f".cache/corral-upload/{digest[:16]}")
    else:
        yield StringCommand(f"mkdir -p {q(folder)}")
        yield FileUploadCommand(StringIO(content), dest)
    yield StringCommand(f"chown {q(user)} {q(dest)} && chmod {q(mode)} {q(dest)}")


APT_INSTALL = ("DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
               "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold")


def install_command(names: list[str]) -> str:
    """The non-interactive ``apt-get install`` of ``names``."""
    return f"{APT_INSTALL} {' '.join(shlex.quote(n) for n in names)}"


@operation(is_idempotent=True)
def packages(packages: list[str]):
    """Ensure the Debian packages ``packages`` are installed (without recommends)."""
    missing = [name for name in packages if name not in probe()["packages"]]
    if not missing:
        host.noop(f"{', '.join(packages)}: installed, nothing to do")
        return
    yield StringCommand(install_command(missing))


@operation(is_idempotent=True)
def symlink(path: str, target: str):
    """Ensure ``path`` is a symbolic link to ``target``."""
    probed = probe().get("links", {})
    current = probed[path] if path in probed else (host.get_fact(Link, path=path) or {}).get(
        "link_target")
    if current == target:
        host.noop(f"{path} -> {target}: nothing to do")
        return
    yield StringCommand(f"ln -sfn {shlex.quote(target)} {shlex.quote(path)}")


@operation(is_idempotent=True)
def user_folder(path: str, user: str, mode: str | None = None):
    """Ensure folder ``path`` (``~/...`` allowed) exists and belongs to ``user``."""
    probed = probe().get("dirs", {})
    state = probed.get(path)
    if state is None and path not in probed:
        info = host.get_fact(File, path=_home(path))
        state = (str(info["mode"]), info["user"]) if info else None
    if state and state[1] == user and (mode is None or state[0] == mode.lstrip("0")):
        host.noop(f"{path}: belongs to {user}, nothing to do")
        return
    dest = shlex.quote(_home(path))
    yield StringCommand(f"mkdir -p {dest} && chown {shlex.quote(user)} {dest}")
    if mode:
        yield StringCommand(f"chmod {shlex.quote(mode)} {dest}")
