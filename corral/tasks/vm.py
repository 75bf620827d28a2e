"""The vm.* tasks: create, start, stop, delete, list, shell, ssh-config, and the runners."""

from __future__ import annotations

import json as jsonlib
import sys

from invoke import Exit, task

from corral import lifecycle, output
from corral.tasks import inventory, reported


@task(help={"name": "VM name(s), comma-separated (default: every VM of the inventory)"})
@reported
def create(c, name=None):
    """Create and start VMs; start them if they exist but are stopped."""
    for vm in inventory().select(name):
        lifecycle.create(vm)


@task(help={"name": "VM name(s), comma-separated (default: every VM)"})
@reported
def start(c, name=None):
    """Start stopped VMs."""
    for vm in inventory().select(name):
        lifecycle.start(vm)


@task(help={"name": "VM name(s), comma-separated (default: every VM)"})
@reported
def stop(c, name=None):
    """Stop running VMs."""
    for vm in inventory().select(name):
        lifecycle.stop(vm)


@task(help={"name": "VM name(s), comma-separated (default: every VM)",
            "yes": "delete without asking"})
@reported
def delete(c, name=None, yes=False):
    """Delete VMs and every file corral kept for them (asks first unless --yes)."""
    for vm in inventory().select(name):
        if not yes and not _confirm(f"Delete VM {vm.name!r} and everything in it? [y/N] "):
            output.say(f"{vm.name}: kept")
            continue
        lifecycle.delete(vm)


@task(name="list", help={"name": "VM name(s), comma-separated (default: every VM)",
                         "json": "print one JSON document instead of a table"})
@reported
def list_(c, name=None, json=False):
    """Show the configured VMs and the state of each (provider, status)."""
    rows = lifecycle.status(inventory(), name)
    if json:
        output.say(jsonlib.dumps(rows, indent=2))
        return
    output.say(output.table(
        ["name", "provider", "status", "image", "project"],
        [[r["name"], r["provider"], r["status"], r["image"], r["project"]] for r in rows],
    ))


@task(help={"name": "the VM (default: the only VM of the inventory)",
            "command": "run this command instead of an interactive shell",
            "workdir": "working directory in the guest (default: the project's mount point)"})
@reported
def shell(c, name=None, command=None, workdir=None):
    """Open a shell in a VM, or run one command there and pass its exit status on."""
    vms = inventory().select(name)
    if len(vms) != 1:
        raise Exit("vm.shell: several VMs configured; choose one with --name", code=1)
    status = lifecycle.shell(vms[0], command, workdir)
    if status:
        raise Exit(code=status)


@task(name="ssh-config", help={"name": "VM name(s) (default: every VM)"})
@reported
def ssh_config(c, name=None):
    """Make ~/.ssh/config include corral's ssh.config files (once, keeping a backup)."""
    lifecycle.include_ssh_configs(inventory().select(name))


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        output.say(question.strip() + " (no terminal to ask; pass --yes)")
        return False
    return input(question).strip().lower() in ("y", "yes")


# The runners import pyinfra and pytest lazily: `invoke --list` and vm.shell stay quick.


@task(help={"name": "VM name(s), comma-separated (default: every VM)",
            "roles": "only these roles, comma-separated (default: every role)",
            "dry": "show what would change, change nothing",
            "check": "run a second pass and fail if it still changes anything"})
@reported
def provision(c, name=None, roles=None, dry=False, check=False):
    """Provision VMs with corral's pyinfra roles, all VMs in parallel."""
    from corral import provision as runner

    runner.run(inventory(), name, roles=_split(roles), dry=dry, check=check)


@task(help={"name": "VM name(s), comma-separated (default: every VM)",
            "junit-xml": "also write the results as a JUnit XML report to this path"})
@reported
def verify(c, name=None, junit_xml=None):
    """Prove each VM is in the state corral promises (testinfra suites in tests/infra)."""
    from corral import verify as runner

    runner.run(inventory(), name, junit_xml=junit_xml)


@task(help={"name": "VM name(s), comma-separated (default: every VM)",
            "json": "print the report as one JSON document",
            "start-stopped": "start stopped VMs, update them, and stop them again"})
@reported
def update(c, name=None, json=False, start_stopped=False):
    """Apply security updates and bring the tools to their pinned or tracked versions."""
    from corral import update as runner

    code = runner.run(inventory(), name, as_json=json, start_stopped=start_stopped)
    if code:
        raise Exit(code=code)


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None
