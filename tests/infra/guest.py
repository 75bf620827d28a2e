"""Small helpers the suites share to ask the guest things."""

from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path

import pytest

from corral.config import VM, load_inventory
from corral.hostdata import host_data


@functools.cache
def target() -> tuple[VM, dict]:
    """The VM under test and the host data its roles received (pins filled in).

    vm.verify names the VM in ``CORRAL_VM`` and the inventory in ``CORRAL_INVENTORY``;
    ``CORRAL_VERIFY_CWD`` is the folder the task ran from (a VM's default project).
    """
    name = os.environ.get("CORRAL_VM")
    if not name:
        raise pytest.UsageError("tests/infra: CORRAL_VM is not set; run the suites with "
                                "'uv run invoke vm.verify --name NAME'")
    cwd = os.environ.get("CORRAL_VERIFY_CWD")
    inventory = load_inventory(cwd=Path(cwd) if cwd else None)
    if name not in inventory.vms:
        raise pytest.UsageError(f"tests/infra: CORRAL_VM={name}: no such VM in "
                                f"{inventory.path} (known: {', '.join(inventory.vms)})")
    vm = inventory.vms[name]
    return vm, host_data(vm)


def requires_toolchain(data: dict, name: str) -> None:
    """Skip the calling test when ``name`` is not one of the VM's toolchains."""
    if name not in data["toolchains"]:
        pytest.skip(f"{name} is not among this VM's toolchains")


def run_as(host, user: str, command: str):
    """Run ``command`` with ``bash -c`` as ``user``, in the environment that user's
    commands get.

    For the SSH login user this is exactly what an agent's ``ssh HOST CMD`` gets (a
    non-interactive shell that reads only ``~/.bashrc``). Another user (``agent_user``)
    has no SSH access of its own; it is reached with ``sudo -i``, its login environment.
    """
    if user == target()[1]["login_user"]:
        return host.run("bash -c %s", command)
    return host.run(f"sudo -n -i -u {shlex.quote(user)} bash -c %s", command)


def mounts(host) -> list[dict[str, str]]:
    """The guest's mounts from /proc/self/mountinfo: target, root (bind source), type, options.

    ``root`` is the folder of the source file system that is mounted: for an Incus disk
    device, the host folder itself.
    """
    found = []
    for line in host.file("/proc/self/mountinfo").content_string.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        found.append({
            "root": _unescape(fields[3]),
            "target": _unescape(fields[4]),
            "options": fields[5],
            "fstype": tail[0],
            "source": _unescape(tail[1]) if len(tail) > 1 else "",
        })
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
