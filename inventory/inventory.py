"""The pyinfra inventory built from corral's YAML: one host per running VM, with its data.

corral's vm.provision uses it; it also works by hand from the checkout:

    uv run pyinfra inventory/inventory.py deploy/deploy.py

``CORRAL_INVENTORY`` chooses the YAML file (default inventory/vms.yaml) and
``CORRAL_NAMES`` (comma-separated) limits the VMs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from corral.config import VM, load_inventory  # noqa: E402
from corral.hostdata import host_data  # noqa: E402


def ssh_user(ssh_config: Path, ssh_host: str) -> str:
    """The user ``ssh -F ssh_config ssh_host`` logs in as (ssh itself resolves it)."""
    result = subprocess.run(["ssh", "-G", "-F", str(ssh_config), ssh_host],
                            capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "user":
            return value.strip()
    return "root"


def pyinfra_host(vm: VM, ssh_config: Path, ssh_host: str, user: str) -> tuple[str, dict]:
    """One pyinfra host: the ssh.config alias, reached through that file, and its data.

    Roles run as root: through sudo unless the SSH user is root.
    """
    data = host_data(vm)
    data.update({
        "ssh_config_file": str(ssh_config),
        "_sudo": user != "root",
    })
    return ssh_host, data


def build(names: str | None = None) -> list[tuple[str, dict]]:
    """The hosts for the VMs named in ``names`` (default: every VM that exists)."""
    from corral.providers import provider_for

    hosts = []
    for vm in load_inventory().select(names):
        provider = provider_for(vm)
        machine = provider.machine(vm.name)
        if machine is None:
            print(f"inventory.py: {vm.name}: no such VM, left out", file=sys.stderr)
            continue
        ssh_config, alias = provider.ssh_config(vm.name), provider.ssh_host(vm.name)
        hosts.append(pyinfra_host(vm, ssh_config, alias, ssh_user(ssh_config, alias)))
    return hosts


# pyinfra executes this file without a module name; an import (tests) builds nothing.
if __name__ in ("builtins", "__main__"):
    vms = build(os.environ.get("CORRAL_NAMES") or None)
