"""What vm.update did to each VM: the report, its exit code, its JSON and its checklist lines."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any

from corral import output

# Exit codes of vm.update (the task passes them on; a scheduler can act on each).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REBOOT = 3


@dataclass
class Change:
    """One package or tool that moved (or could move) from ``old`` to ``new``."""

    name: str
    kind: str  # "package" or "tool"
    old: str | None
    new: str | None
    # Why: "security", "updates" (update_policy: all), "pinned", "latest", "dependency".
    reason: str = ""


@dataclass
class Current:
    """A tool that was already at its wanted version."""

    name: str
    version: str
    reason: str  # "pinned" or "latest"


@dataclass
class VMReport:
    """What vm.update did to one VM."""

    name: str
    status: str = "current"  # updated, current, skipped, failed
    update_policy: str = "security"
    upgraded: list[Change] = field(default_factory=list)
    installed: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    current: list[Current] = field(default_factory=list)
    pending: list[Change] = field(default_factory=list)
    reboot_required: bool = False
    reboot_packages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed_step: str | None = None
    error: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 1)
        return data


def exit_code(reports: list[VMReport]) -> int:
    """1 when any VM failed, else 3 when any needs a reboot, else 0."""
    if any(r.status == "failed" for r in reports):
        return EXIT_FAILED
    if any(r.reboot_required for r in reports):
        return EXIT_REBOOT
    return EXIT_OK


def document(reports: list[VMReport], started: float, seconds: float) -> dict[str, Any]:
    """The JSON report: when it ran, its exit code, and one entry per VM."""
    return {
        "started": _iso(started),
        "seconds": round(seconds, 1),
        "exit_code": exit_code(reports),
        "vms": [r.to_dict() for r in reports],
    }


def render(report: VMReport) -> None:
    """Tell the user, one checklist line at a time, what happened to one VM."""
    name = report.name
    if report.status == "skipped":
        output.mark("info", f"{name}: skipped, {report.note}")
        return
    for change in report.upgraded:
        output.mark("ok", f"{name}: {change.name} {change.old} → {change.new} ({change.reason})")
    for change in report.installed:
        output.mark("ok", f"{name}: {change.name} {change.new} installed ({change.reason})")
    for change in report.removed:
        output.mark("warn", f"{name}: {change.name} {change.old} removed")
    if report.current:
        tools = ", ".join(f"{c.name} {c.version}" for c in report.current)
        output.mark("info", f"{name}: already current: {tools}")
    if report.pending:
        names = ", ".join(c.name for c in report.pending[:8])
        more = f" and {len(report.pending) - 8} more" if len(report.pending) > 8 else ""
        why = ("still pending" if report.status == "failed"
               else f"left by update_policy: {report.update_policy}")
        count = len(report.pending)
        output.mark("info", f"{name}: {count} other update{'s' if count > 1 else ''} {why} "
                            f"({names}{more})")
    if report.status == "failed":
        output.mark("fail", f"{name}: {report.error}")
        return
    if report.reboot_required:
        why = f" (for {', '.join(report.reboot_packages)})" if report.reboot_packages else ""
        output.mark("warn", f"{name}: reboot required{why}",
                    hint=f"uv run invoke vm.stop --name {name} vm.start --name {name}")
    if report.status == "current":
        output.mark("ok", f"{name}: nothing to do, all current ({report.seconds:.0f}s)")
    else:
        count = len(report.upgraded) + len(report.installed)
        output.mark("ok", f"{name}: {count} upgraded in {report.seconds:.0f}s")



def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
