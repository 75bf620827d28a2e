"""vm.provision: run the pyinfra roles on VMs, summarise, and prove a second run is a no-op."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from corral import lifecycle, output, paths
from corral import secrets as host_secrets
from corral.config import VM, Inventory
from corral.errors import ConfigError, CorralError
from corral.hostdata import host_data, load_versions
from corral.providers import provider_for

log = logging.getLogger(__name__)

INVENTORY_FILE = paths.ROOT / "inventory" / "inventory.py"
DEPLOY_FILE = paths.DEPLOY / "deploy.py"


class ProvisionFailed(CorralError):
    """An operation failed on a VM, or a second run still changed something."""


@dataclass
class Outcome:
    """What one pyinfra run did on one VM."""

    vm: str
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    host_failed: bool = False


def run(inventory: Inventory, names: str | None, *, roles: list[str] | None = None,
        dry: bool = False, check: bool = False) -> list[Outcome]:
    """Provision the VMs named in ``names`` (all when None), every VM in parallel.

    + inventory: the validated inventory
    + names: comma-separated VM names, or None for every VM
    + roles: only these roles (default: every role the VM gets)
    + dry: show what would change and change nothing
    + check: run a second time and fail if that run changes anything

    Prints pyinfra's progress, then a per-VM summary. Raises :class:`ProvisionFailed`
    naming each failed operation and its VM; the message ends the task's output.
    """
    from deploy import roles as role_set

    vms = inventory.select(names)
    if roles and role_set.unknown(roles):
        raise ConfigError([f"--roles: {', '.join(role_set.unknown(roles))}: no such role "
                           f"(roles: {', '.join(role_set.ROLE_NAMES)})"])
    for vm in vms:
        lifecycle.require(vm, running=True)

    # Everything that can be checked on the host is, before a single operation runs.
    versions = load_versions()
    problems, secret_values = [], []
    for vm in vms:
        data = host_data(vm, versions)
        chosen = role_set.selected(data, roles)
        problems += [f"{vm.name}: {p}" for p in role_set.preflight(data, chosen)]
        if "credentials" in chosen:
            secret_values += list(host_secrets.for_vm(data).values())
    if problems:
        raise ConfigError(problems)

    outcomes = _pyinfra(inventory, vms, roles, dry=dry, secrets=secret_values)
    output.say("")
    output.say(summary(outcomes, dry=dry))
    failures = failure_lines(outcomes)
    if failures:
        raise ProvisionFailed("\n".join(failures))
    if check and not dry:
        output.say("")
        output.say("Second run, to prove the first left nothing to do:")
        again = _pyinfra(inventory, vms, roles, dry=False, secrets=secret_values)
        output.say("")
        output.say(summary(again))
        failures = failure_lines(again) + idempotence_lines(again)
        if failures:
            raise ProvisionFailed("\n".join(failures))
        output.mark("ok", "second run changed nothing")
    return outcomes


def summary(outcomes: list[Outcome], dry: bool = False) -> str:
    """The per-VM table: operations changed, unchanged and failed."""
    changed = "would change" if dry else "changed"
    rows = [[o.vm, len(o.changed), len(o.unchanged),
             len(o.failed) + (1 if o.host_failed and not o.failed else 0)] for o in outcomes]
    return output.table(["vm", changed, "unchanged", "failed"], rows)


def failure_lines(outcomes: list[Outcome]) -> list[str]:
    """One line per failed operation (or unreachable VM), naming the VM."""
    lines = []
    for o in outcomes:
        for name, error in o.failed:
            lines.append(f"{o.vm}: operation '{name}' failed: {error}")
        if o.host_failed and not o.failed:
            lines.append(f"{o.vm}: pyinfra could not run on this VM (see its output above)")
    return lines


def idempotence_lines(outcomes: list[Outcome]) -> list[str]:
    """One line per operation that changed something on a second run."""
    return [f"{o.vm}: not idempotent: operation '{name}' changed again on the second run"
            for o in outcomes for name in o.changed]


def outcomes_from_report(report: dict, vms: dict[str, str], dry: bool = False) -> list[Outcome]:
    """Turn the JSON deploy/report.py wrote into one :class:`Outcome` per VM.

    + report: ``{ssh_host: {"failed": bool, "ops": [...]}}``
    + vms: ssh host alias -> VM name, for every VM that was meant to run
    """
    outcomes = []
    for alias, name in vms.items():
        entry = report.get(alias)
        outcome = Outcome(vm=name)
        if entry is None:
            outcome.host_failed = True
            outcomes.append(outcome)
            continue
        outcome.host_failed = bool(entry.get("failed"))
        for op in entry.get("ops", []):
            status = op.get("status")
            if status == "failed":
                outcome.failed.append((op["name"], op.get("error") or "failed"))
            elif status == "changed" or (dry and op.get("would_change")):
                outcome.changed.append(op["name"])
            elif status in ("unchanged", "not run"):
                outcome.unchanged.append(op["name"])
        outcomes.append(outcome)
    return outcomes


def _pyinfra(inventory: Inventory, vms: list[VM], roles: list[str] | None, *, dry: bool,
             secrets: list[str]) -> list[Outcome]:
    """Run pyinfra's CLI on ``vms``, streaming its progress with secrets masked."""
    aliases = {provider_for(vm).ssh_host(vm.name): vm.name for vm in vms}
    with tempfile.TemporaryDirectory(prefix="corral-provision-") as folder:
        report_file = Path(folder) / "report.json"
        env = dict(os.environ)
        env.update({
            "CORRAL_INVENTORY": str(inventory.path),
            "CORRAL_NAMES": ",".join(vm.name for vm in vms),
            "CORRAL_ROLES": ",".join(roles or []),
            "CORRAL_REPORT": str(report_file),
        })
        argv = [sys.executable, "-m", "pyinfra", "--yes", "--no-wait",
                str(INVENTORY_FILE), str(DEPLOY_FILE)]
        if dry:
            argv.append("--dry")
        log.debug("running %s", " ".join(argv))
        code, last = _stream(argv, env, secrets)
        if not report_file.exists():
            raise ProvisionFailed(f"pyinfra stopped before running any operation: {last}")
        report = json.loads(report_file.read_text())
    outcomes = outcomes_from_report(report, aliases, dry=dry)
    if code and not failure_lines(outcomes):
        # pyinfra failed outside any operation (a role refused its data, a lost connection).
        raise ProvisionFailed(f"pyinfra failed (exit {code}): {last}")
    return outcomes


def _stream(argv: list[str], env: dict[str, str], secrets: list[str]) -> tuple[int, str]:
    """Run ``argv``, copying its output line by line with secrets masked.

    Returns its exit status and its last non-empty line.
    """
    last = "no output"
    with subprocess.Popen(argv, cwd=paths.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as child:
        try:
            for line in child.stdout:
                shown = host_secrets.mask(line.rstrip("\n"), secrets)
                output.say(shown)
                if shown.strip():
                    last = shown.strip()
        except KeyboardInterrupt:
            child.terminate()
            child.wait()
            raise
    return child.returncode, last
