"""Updating one running VM: apt's security updates, the apt-packaged tools, then the roles'."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from corral.config import VM
from corral.errors import CorralError
from corral.hostdata import host_data
from corral.update.guest import (
    Guest,
    StepFailed,
    refresh_script,
    sections,
    state_script,
    upgrade_all_script,
    upgrade_script,
)
from corral.update.parsing import (
    diff_packages,
    parse_dpkg_query,
    parse_reboot,
    parse_releases,
    parse_simulation,
    security_plan,
)
from corral.update.report import Change, Current, VMReport
from corral.update.tools import APT_TOOLS, TOOLS, latest_go, latest_npm, latest_pypi


def update_vm(vm: VM, guest: Guest, provision: Callable[[VM, list[str]], None],
              report: VMReport | None = None) -> VMReport:
    """Update one running VM and report what changed.

    + vm: the VM of the inventory
    + guest: how to reach it
    + provision: runs roles on a VM (the provisioning runner,
      see :func:`corral.update.task._provision`)
    + report: the report to fill in; when a step fails it still holds what had changed
    """
    data = host_data(vm)
    report = report or VMReport(vm.name, update_policy=vm.settings.update_policy)
    lock_timeout = int(data.get("base_apt_lock_timeout", 300))

    # Refresh the package lists, waiting for an agent's apt to finish first.
    guest.run(refresh_script(lock_timeout), "apt-get update")
    state = sections(guest.run(state_script(), "reading the package state"))
    before = parse_dpkg_query(state["dpkg"])
    apt_tools = [name for name, applies in APT_TOOLS if applies(data) and name in before]
    reasons: dict[str, str] = {}
    try:
        _apt_steps(vm, guest, state, apt_tools, lock_timeout, reasons)
        _tool_steps(vm, guest, data, provision, report)
    except StepFailed:
        with contextlib.suppress(StepFailed):
            _record(report, guest, before, apt_tools, reasons)
        report.status = "failed"
        raise
    _record(report, guest, before, apt_tools, reasons)
    report.status = "updated" if report.upgraded or report.installed or report.removed \
        else "current"
    return report


def _apt_steps(vm: VM, guest: Guest, state: dict[str, str], apt_tools: list[str],
               lock_timeout: int, reasons: dict[str, str]) -> None:
    """Security updates, the apt-packaged tools, then the rest per policy.

    Fills ``reasons`` with why each package was upgraded.
    """
    from deploy.roles.security import origins

    # Security updates first, from the same origins unattended-upgrades uses.
    distro_id, _, codename = state["os"].strip().partition("\n")
    planned = parse_simulation(state["simulation"])
    releases = parse_releases(state["releases"])
    security = security_plan(planned, releases, origins(distro_id, codename.strip()))
    reasons.update({p.name: "security" for p in security})
    if security:
        guest.run(upgrade_script([p.name for p in security], lock_timeout),
                  "applying security updates")

    # The tools that come from third-party apt repositories: the newest there.
    tools_planned = [p for p in planned if p.name in apt_tools and p.name not in reasons]
    if tools_planned:
        reasons.update({p.name: "latest" for p in tools_planned})
        guest.run(upgrade_script([p.name for p in tools_planned], lock_timeout),
                  f"upgrading {', '.join(p.name for p in tools_planned)}")

    # Then the rest, when the policy says so.
    if vm.settings.update_policy == "all":
        reasons.update({p.name: "updates" for p in planned if p.name not in reasons})
        guest.run(upgrade_all_script(lock_timeout), "applying all updates")


def _tool_steps(vm: VM, guest: Guest, data: dict[str, Any],
                provision: Callable[[VM, list[str]], None], report: VMReport) -> None:
    """The tools the roles install, brought to their pin or to the newest of their channel."""
    from deploy.roles.common import Probe, parse_probe

    facts = parse_probe(guest.run(Probe().command(vm.agent), "reading tool versions")
                        .splitlines())
    overrides, wanted = _tool_targets(vm, data, facts, guest)
    behind = []
    for tool in TOOLS:
        if tool.name not in wanted:
            continue
        target, reason = wanted[tool.name]
        if tool.installed(facts, target) == target:
            report.current.append(Current(tool.name, target, reason))
        else:
            behind.append(tool)
    if not behind:
        return

    # One run of the roles concerned, with the versions resolved above.
    roles = sorted({t.role for t in behind})
    try:
        provision(_with_settings(vm, overrides), roles)
    except CorralError as err:
        raise StepFailed(f"provisioning {', '.join(roles)}", str(err)) from None
    after = parse_probe(guest.run(Probe().command(vm.agent), "reading tool versions")
                        .splitlines())
    for tool in behind:
        target, reason = wanted[tool.name]
        new = tool.installed(after, target)
        report.upgraded.append(Change(tool.name, "tool", tool.installed(facts, target), new,
                                      reason))
        if new != target:
            raise StepFailed(f"provisioning {tool.role}",
                             f"{tool.name} is {new}, expected {target}")


def _record(report: VMReport, guest: Guest, before: dict[str, str], apt_tools: list[str],
            reasons: dict[str, str]) -> None:
    """What changed in the packages, what is left, and whether the VM needs a reboot."""
    state = sections(guest.run(state_script(), "reading the package state"))
    upgraded, installed, removed = diff_packages(before, parse_dpkg_query(state["dpkg"]))
    for change in upgraded:
        change.reason = reasons.get(change.name.split(":")[0], "dependency")
        change.kind = "tool" if change.name in apt_tools else "package"
    report.upgraded[:0] = upgraded
    report.installed, report.removed = installed, removed
    left = "not security" if report.update_policy == "security" else "held back"
    report.pending = [Change(p.name, "package", p.old, p.new,
                             "not applied" if p.name in reasons else left)
                      for p in parse_simulation(state["simulation"])]
    report.reboot_required, report.reboot_packages = parse_reboot(state["reboot"])
    tool_names = {c.name for c in report.upgraded}
    report.current.extend(Current(name, before[name], "latest") for name in apt_tools
                          if name not in tool_names)


def _tool_targets(vm: VM, data: dict[str, Any], facts: dict[str, Any], guest: Guest
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str]]]:
    """Each tool's wanted version and why, and the settings that make its role install it."""
    overrides: dict[str, dict[str, Any]] = {}
    wanted: dict[str, tuple[str, str]] = {}
    for tool in TOOLS:
        if not tool.applies(data):
            continue
        section = getattr(vm.settings, tool.role)
        pinned = data.get(f"{tool.role}_{tool.key}")
        if getattr(section, "track", "pinned") != "latest" or not tool.can_track:
            if pinned:
                wanted[tool.name] = (str(pinned), "pinned")
            continue
        if tool.role == "opencode":
            target = latest_npm(guest, "opencode-ai")
            overrides["opencode"] = {"version": target}
        elif tool.name == "uv":
            target = latest_pypi("uv")
            overrides["python"] = {"uv_version": target}
        else:
            target, sha = latest_go(data["go_url"], str(pinned), facts.get("arch", "amd64"))
            overrides["go"] = {"version": target,
                               "sha256": {**(data.get("go_sha256") or {}),
                                          facts.get("arch", "amd64"): sha}}
        wanted[tool.name] = (target, "latest")
    return overrides, wanted


def _with_settings(vm: VM, overrides: dict[str, dict[str, Any]]) -> VM:
    """``vm`` with some role keys replaced (the versions vm.update resolved)."""
    changes = {role: getattr(vm.settings, role).model_copy(update=keys)
               for role, keys in overrides.items()}
    return dataclasses.replace(vm, settings=vm.settings.model_copy(update=changes))

