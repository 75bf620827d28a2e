"""host.doctor: checks that this host can create, provision and update corral's VMs."""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import re
import shutil
from pathlib import Path

import jinja2
import yaml

from corral import output, paths, process, render
from corral.config import VM, display, inventory_path, load_inventory
from corral.errors import ConfigError, CorralError, ProviderMissing
from corral.providers import provider_class, provider_for
from corral.providers.lima import lima_home

log = logging.getLogger(__name__)

#: Free space wanted in the state folder's file system: a VM image, its disk and updates.
MIN_FREE_GIB = 20
#: The device Lima's QEMU needs on Linux; read at each run, so tests may point elsewhere.
KVM_DEVICE = Path("/dev/kvm")

LIMA_HINT = "install Lima 2 (https://lima-vm.io/docs/installation/, e.g. 'brew install lima')"
INCUS_HINT = "run 'sudo uv run invoke host.setup --provider incus'"


class _Checklist:
    """Prints each check as it is made and remembers whether any failed."""

    def __init__(self) -> None:
        self.ok = True

    def passed(self, text: str) -> None:
        output.mark("ok", text)

    def failed(self, text: str, hint: str) -> None:
        self.ok = False
        output.mark("fail", text, hint)

    def note(self, text: str, hint: str | None = None) -> None:
        output.mark("info", text, hint)


def run() -> bool:
    """Check the host and print one ✓/✗ line per check (with a fix under each ✗).

    Checks the inventory, the provider tools its VMs need (limactl recent enough, the
    Incus daemon answering), hardware virtualization for Lima, free disk space, that the
    Lima definitions render, and shows the update schedule when one is installed.
    Returns True when every check passed.
    """
    checks = _Checklist()

    # The inventory first: it says which providers the host needs.
    vms = _check_inventory(checks)
    providers = _providers(checks, vms)

    # The tools of those providers, and what each needs from the host.
    if "lima" in providers:
        _check_limactl(checks, [vm for vm in vms if vm.name in providers["lima"]])
        _check_virtualization(checks)
        _check_lima_global_mounts(checks)
        _check_lima_definitions(checks, [vm for vm in vms if vm.name in providers["lima"]])
    if "incus" in providers:
        _check_incus(checks)
    _check_disk(checks)
    _show_schedule(checks)
    return checks.ok


def _check_inventory(checks: _Checklist) -> list[VM]:
    path = inventory_path()
    try:
        inventory = load_inventory(path)
    except ConfigError as err:
        first = err.problems[0]
        more = f" (and {len(err.problems) - 1} more)" if len(err.problems) > 1 else ""
        checks.failed(f"inventory {display(path)} is not valid: {first}{more}",
                      "fix it; 'uv run invoke vm.list' shows every problem")
        return []
    count = f"{len(inventory.vms)} VM" + ("s" if len(inventory.vms) > 1 else "")
    checks.passed(f"inventory {display(path)} is valid ({count}: {', '.join(inventory.vms)})")
    return list(inventory.vms.values())


def _providers(checks: _Checklist, vms: list[VM]) -> dict[str, list[str]]:
    """The providers the VMs use, each with the names of its VMs."""
    used: dict[str, list[str]] = {}
    for vm in vms:
        try:
            name = provider_for(vm).name
        except ProviderMissing as err:
            wanted = vm.settings.provider
            checks.failed(f"{vm.name}: no provider ({err})",
                          LIMA_HINT if wanted == "lima" else INCUS_HINT if wanted == "incus"
                          else f"{LIMA_HINT}, or on Linux {INCUS_HINT}")
            continue
        used.setdefault(name, []).append(vm.name)
    for name, names in used.items():
        checks.passed(f"provider {name} for {', '.join(names)}")
    return used


def lima_version() -> str | None:
    """The installed Lima's version (``2.2.0``), from ``limactl --version``; None if unknown."""
    result = process.run(["limactl", "--version"], what="limactl --version", timeout=30)
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", result.stdout)
    return match.group(0) if match else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _check_limactl(checks: _Checklist, vms: list[VM]) -> None:
    wanted = max((render.minimum_lima_version(vm) for vm in vms), key=_version_key,
                 default="2.0.0")
    try:
        version = lima_version()
    except CorralError as err:
        checks.failed(f"limactl does not answer ({err})", LIMA_HINT)
        return
    if version is None:
        checks.note(f"limactl found, version unknown (the inventory needs Lima ≥ {wanted})")
    elif _version_key(version) < _version_key(wanted):
        checks.failed(f"limactl {version} is older than {wanted}, which the inventory needs",
                      "upgrade Lima (e.g. 'brew upgrade lima'; "
                      "https://lima-vm.io/docs/installation/)")
    else:
        checks.passed(f"limactl {version} (the inventory needs ≥ {wanted})")


def _check_virtualization(checks: _Checklist) -> None:
    system = platform.system()
    if system == "Darwin":
        try:
            answer = process.run(["sysctl", "-n", "kern.hv_support"], what="sysctl").stdout
        except CorralError as err:
            checks.failed(f"cannot ask macOS about virtualization ({err})",
                          "Lima needs Hypervisor.framework (a Mac from 2010 or later)")
            return
        if answer.strip() == "1":
            checks.passed("macOS virtualization (Hypervisor.framework) available")
        else:
            checks.failed("macOS reports no hardware virtualization (kern.hv_support is 0)",
                          "Lima needs Hypervisor.framework; inside a VM, enable nested "
                          "virtualization")
        return
    device = KVM_DEVICE
    if os.access(device, os.R_OK | os.W_OK):
        checks.passed(f"KVM available ({device})")
    elif device.exists():
        checks.failed(f"{device} exists but this user cannot use it",
                      "add yourself to its group: sudo usermod -aG kvm $USER "
                      "(then log in again)")
    else:
        checks.failed(f"no KVM ({device} is missing): Lima VMs would run emulated, "
                      "very slowly", "enable virtualization (VT-x/AMD-V) in the firmware, "
                      "or nested virtualization in the outer VM; or use Incus containers")


def _check_lima_global_mounts(checks: _Checklist) -> None:
    """Lima merges $LIMA_HOME/_config/*.yaml into every instance: a mount there is shared."""
    for name in ("base.yaml", "default.yaml", "override.yaml"):
        path = lima_home() / "_config" / name
        try:
            config = yaml.safe_load(path.read_text()) if path.exists() else None
        except (OSError, yaml.YAMLError) as err:
            checks.failed(f"{path} cannot be read ({err})", "fix or remove the file")
            continue
        if isinstance(config, dict) and config.get("mounts"):
            where = ", ".join(str(m.get("location", m)) if isinstance(m, dict) else str(m)
                              for m in config["mounts"])
            checks.failed(f"{path} adds mounts to every Lima instance ({where})",
                          f"remove 'mounts' from {path}: corral shares only the project")
            return
    checks.passed("no global Lima mounts ($LIMA_HOME/_config adds none)")


def _check_lima_definitions(checks: _Checklist, vms: list[VM]) -> None:
    for vm in vms:
        try:
            definition = yaml.safe_load(render.render(vm))
        except ConfigError as err:
            checks.failed(f"{vm.name}: the Lima definition cannot be made: {err}",
                          "change the inventory as the message says")
            continue
        except (jinja2.TemplateError, yaml.YAMLError, OSError) as err:
            checks.failed(f"{vm.name}: the Lima definition does not render ({err})",
                          "report this as a bug in templates/lima/agent.yaml.j2")
            continue
        if not isinstance(definition, dict) or "base" not in definition:
            checks.failed(f"{vm.name}: the Lima definition renders to no Lima YAML",
                          "report this as a bug in templates/lima/agent.yaml.j2")
            continue
        checks.passed(f"{vm.name}: Lima definition renders ({definition['base'][0]})")


def _check_incus(checks: _Checklist) -> None:
    if not provider_class("incus").available():
        checks.failed("incus not found on PATH", INCUS_HINT)
        return
    try:
        process.run(["incus", "query", "/1.0"], what="asking the Incus daemon", timeout=20)
    except CorralError as err:
        checks.failed(f"the Incus daemon does not answer ({err})",
                      f"{INCUS_HINT}; or add yourself to the incus-admin group")
        return
    checks.passed("incus present and its daemon answers")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_disk(checks: _Checklist) -> None:
    state = paths.state_dir()
    free_gib = shutil.disk_usage(_existing_parent(state)).free / 2**30
    text = f"{free_gib:.1f} GiB free for {state}"
    if free_gib >= MIN_FREE_GIB:
        checks.passed(f"{text} (≥ {MIN_FREE_GIB} GiB wanted)")
    else:
        checks.failed(f"only {text}; corral wants ≥ {MIN_FREE_GIB} GiB",
                      "free some space, or point CORRAL_STATE_DIR (and LIMA_HOME) at a "
                      "bigger disk")


def _show_schedule(checks: _Checklist) -> None:
    """The vm.update schedule, when corral.schedule is there to tell."""
    if importlib.util.find_spec("corral.schedule") is None:
        return
    from corral import schedule

    status = getattr(schedule, "status", None)
    if status is None:
        return
    try:
        line = status()
    except CorralError as err:
        checks.note(f"update schedule unknown ({err})")
        return
    if line:
        checks.note(f"update schedule: {line}")
    else:
        checks.note("no update schedule",
                    "to update VMs daily: uv run invoke host.schedule-update --at 04:00")
