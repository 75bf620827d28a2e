"""The VM lifecycle the vm.* tasks drive, on whichever provider each VM uses."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from corral import output
from corral.config import VM, Inventory
from corral.errors import MachineNotFound
from corral.providers import provider_for
from corral.providers.base import RUNNING, STOPPED, Machine

log = logging.getLogger(__name__)


def create(vm: VM) -> None:
    """Create and start ``vm``, or start it when it exists and is stopped."""
    provider = provider_for(vm)
    existing = provider.machine(vm.name)
    if existing and existing.status == RUNNING:
        output.say(f"{vm.name}: already running on {provider.name}, nothing to do")
        return
    if existing:
        output.say(f"{vm.name}: exists ({existing.status}), starting it")
        provider.start(vm)
        output.say(f"{vm.name}: running")
        return
    output.say(f"{vm.name}: creating on {provider.name} ({vm.settings.image}, "
               f"{vm.settings.cpus} CPUs, {vm.settings.memory})")
    provider.create(vm)
    output.say(f"{vm.name}: running; ssh -F {provider.ssh_config(vm.name)} "
               f"{provider.ssh_host(vm.name)}")


def start(vm: VM) -> None:
    """Start ``vm`` (nothing to do when it runs)."""
    provider = provider_for(vm)
    machine = require(vm)
    if machine.status == RUNNING:
        output.say(f"{vm.name}: already running, nothing to do")
        return
    provider.start(vm)
    output.say(f"{vm.name}: running")


def stop(vm: VM) -> None:
    """Stop ``vm`` (nothing to do when it is stopped)."""
    provider = provider_for(vm)
    machine = require(vm)
    if machine.status == STOPPED:
        output.say(f"{vm.name}: already stopped, nothing to do")
        return
    provider.stop(vm)
    output.say(f"{vm.name}: stopped")


def delete(vm: VM) -> None:
    """Delete ``vm`` and corral's files for it (nothing to do when it does not exist)."""
    provider = provider_for(vm)
    if provider.machine(vm.name) is None:
        output.say(f"{vm.name}: does not exist, nothing to do")
        return
    provider.delete(vm)
    output.say(f"{vm.name}: deleted")


def require(vm: VM, *, running: bool = False) -> Machine:
    """The machine of ``vm``; raise one clear line when it is missing (or not running)."""
    provider = provider_for(vm)
    machine = provider.machine(vm.name)
    if machine is None:
        raise MachineNotFound(
            f"{vm.name}: no such VM on {provider.name} (create it: uv run invoke vm.create "
            f"--name {vm.name})"
        )
    if running and machine.status != RUNNING:
        raise MachineNotFound(
            f"{vm.name}: VM is {machine.status} (start it: uv run invoke vm.start "
            f"--name {vm.name})"
        )
    return machine


def status(inventory: Inventory, names: str | None) -> list[dict]:
    """One row per configured VM: name, provider, status (``absent`` when not created)."""
    rows = []
    for vm in inventory.select(names):
        provider = provider_for(vm)
        machine = provider.machine(vm.name)
        rows.append({
            "name": vm.name,
            "provider": provider.name,
            "status": machine.status if machine else "absent",
            "image": vm.settings.image,
            "project": str(vm.project) if vm.settings.mount != "none" else "-",
            "mount_point": vm.mount_point if vm.settings.mount != "none" else None,
            "ssh_host": machine.ssh_host if machine else None,
            "ssh_config": str(machine.ssh_config) if machine and machine.ssh_config else None,
        })
    return rows


def shell(vm: VM, command: str | None, workdir: str | None) -> int:
    """Run ``command`` (a shell string) or an interactive login shell in ``vm``."""
    require(vm, running=True)
    if workdir is None and vm.settings.mount != "none":
        workdir = vm.mount_point
    argv = ["bash", "-lc", command] if command else None
    return provider_for(vm).shell(vm, argv, workdir)


INCLUDE_MARK = "# Added by corral (uv run invoke vm.ssh-config)"


def include_ssh_configs(vms: list[VM], ssh_config: Path | None = None) -> None:
    """Add one ``Include`` per provider's ssh.config files at the top of ``~/.ssh/config``.

    Idempotent: a line already there is not added again. The previous file is kept as
    ``config.corral.bak`` before the first change.
    """
    ssh_config = ssh_config or Path.home() / ".ssh" / "config"
    wanted = []
    for vm in vms:
        pattern = _include_pattern(vm)
        if pattern not in wanted:
            wanted.append(pattern)
    current = ssh_config.read_text() if ssh_config.exists() else ""
    present = {line.strip() for line in current.splitlines()}
    missing = [f"Include {p}" for p in wanted if f"Include {p}" not in present]
    if not missing:
        output.say(f"{ssh_config}: already includes corral's ssh.config files, nothing to do")
        return
    ssh_config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if ssh_config.exists():
        backup = ssh_config.with_name(ssh_config.name + ".corral.bak")
        shutil.copy2(ssh_config, backup)
        output.say(f"{ssh_config}: backup kept as {backup}")
    # Include must come before any Host block, or it only applies inside that block.
    block = "\n".join([INCLUDE_MARK, *missing]) + "\n\n"
    tmp = ssh_config.with_name(ssh_config.name + ".corral.tmp")
    tmp.write_text(block + current)
    tmp.chmod(0o600)
    tmp.replace(ssh_config)
    for line in missing:
        output.say(f"{ssh_config}: added '{line}'")


def _include_pattern(vm: VM) -> str:
    """The glob matching every ssh.config of ``vm``'s provider, with ``~`` kept literal."""
    provider = provider_for(vm)
    folder = provider.ssh_config(vm.name).parent.parent
    try:
        return f"~/{folder.relative_to(Path.home())}/*/ssh.config"
    except ValueError:
        return f"{folder}/*/ssh.config"
