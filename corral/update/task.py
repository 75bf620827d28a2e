"""The vm.update task: every VM of the inventory in turn, the report printed and kept."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from corral import output, paths
from corral.config import VM, Inventory, load_inventory
from corral.errors import CorralError
from corral.providers.base import RUNNING
from corral.update.guest import Guest, StepFailed, last_line
from corral.update.report import VMReport, document, render
from corral.update.steps import update_vm

#: The last report, kept in corral's state folder whatever the output format.
REPORT_NAME = "update-last.json"


def _provision(vm: VM, roles: list[str]) -> None:
    """Run ``roles`` on ``vm`` through corral's provisioning runner.

    The runner (and pyinfra's inventory) read the inventory from a file, so the VM, with
    the versions vm.update resolved, is written to a temporary one: every key spelled
    out, host paths made absolute. pyinfra's progress goes to a log in the state folder,
    named in the error when the run fails.
    """
    import tempfile

    import yaml

    from corral import provision

    settings = vm.settings.model_dump(mode="json")
    settings.update(project=str(vm.project), mount_point=vm.mount_point,
                    ca_certs=[str(cert) for cert in vm.ca_certs])
    log_file = paths.state_dir() / f"update-{vm.name}-provision.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-update-") as folder:
        path = Path(folder) / "inventory.yaml"
        path.write_text(yaml.safe_dump({"vms": {vm.name: settings}}, sort_keys=False))
        try:
            with _stdout_to(log_file):
                provision.run(load_inventory(path), vm.name, roles=roles)
        except CorralError as err:
            raise CorralError(f"{last_line(str(err))} (pyinfra's output: {log_file})") from None



def run(inventory: Inventory, names: str | None, as_json: bool = False,
        start_stopped: bool = False) -> int:
    """Update the VMs of ``inventory`` one after another; return vm.update's exit code.

    + inventory: the loaded inventory
    + names: ``--name`` (comma-separated), or None for every VM
    + as_json: print one JSON document instead of checklist lines
    + start_stopped: start a stopped VM, update it and stop it again (else it is skipped)

    Exit codes: 0 every VM updated or already current (or skipped), 1 a step failed on
    some VM (the report names VM and step), 3 no failure but a VM needs a reboot. The
    report is also kept as ``update-last.json`` in corral's state folder.
    """
    started_wall, started = time.time(), time.monotonic()
    vms = inventory.select(names)
    reports = []
    # With --json, standard output carries the document alone: what the provisioning
    # runner (and pyinfra under it) prints goes to standard error meanwhile.
    with _stdout_to() if as_json else contextlib.nullcontext():
        for vm in vms:
            reports.append(_update_one(vm, as_json, start_stopped))

    doc = document(reports, started_wall, time.monotonic() - started)
    _keep(doc)
    if as_json:
        output.say(json.dumps(doc, indent=2))
    return doc["exit_code"]


def _update_one(vm: VM, as_json: bool, start_stopped: bool) -> VMReport:
    """Update one VM of the inventory, whatever state it is in, and tell the user."""
    from corral.providers import provider_for

    began = time.monotonic()
    report = VMReport(vm.name, update_policy=vm.settings.update_policy)
    provider = None
    stop_after = False
    try:
        provider = provider_for(vm)
        machine = provider.machine(vm.name)
        if machine is None:
            report.status, report.note = "skipped", "the VM does not exist"
        elif machine.status != RUNNING and not start_stopped:
            report.status = "skipped"
            report.note = f"the VM is {machine.status} (pass --start-stopped to update it)"
        else:
            if machine.status != RUNNING:
                if not as_json:
                    output.say(f"{vm.name}: {machine.status}, starting it to update it")
                provider.start(vm)
                stop_after = True
            elif not as_json:
                output.say(f"{vm.name}: updating (update_policy: {vm.settings.update_policy})")
            guest = Guest(vm.name, provider.ssh_config(vm.name), provider.ssh_host(vm.name))
            update_vm(vm, guest, _provision, report)
    except StepFailed as err:
        report.status, report.failed_step, report.error = "failed", err.step, str(err)
    except CorralError as err:
        report.status, report.failed_step = "failed", "reaching the VM"
        report.error = str(err)
    finally:
        if stop_after:
            try:
                provider.stop(vm)
            except CorralError as err:
                report.status, report.failed_step = "failed", "stopping the VM again"
                report.error = str(err)
    report.seconds = time.monotonic() - began
    if not as_json:
        render(report)
    return report


@contextlib.contextmanager
def _stdout_to(target: Path | None = None):
    """Send all standard output (Python's and children's) to ``target``, else to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    sink = open(target, "w", encoding="utf-8") if target else sys.stderr  # noqa: SIM115
    try:
        os.dup2(sink.fileno() if target else 2, 1)
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        sys.stdout.flush()
        sink.flush()
        os.dup2(saved, 1)
        os.close(saved)
        if target:
            sink.close()


def _keep(doc: dict[str, Any]) -> None:
    """Write the report to the state folder (replacing the previous one in one step)."""
    folder = paths.state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (REPORT_NAME + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / REPORT_NAME)
    except OSError as err:
        output.warn(f"could not keep the report in {folder}: {err.strerror}")

