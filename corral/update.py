"""vm.update: security updates now, tools to their pinned or tracked versions, and a report."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral import output, paths
from corral.config import VM, Inventory, load_inventory
from corral.errors import CorralError
from corral.hostdata import host_data
from corral.providers.base import RUNNING

log = logging.getLogger(__name__)

# Exit codes of vm.update (the task passes them on; a scheduler can act on each).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REBOOT = 3

#: The last report, kept in corral's state folder whatever the output format.
REPORT_NAME = "update-last.json"

# How long one step in a VM may take before it counts as hung.
STEP_TIMEOUT = 30 * 60

APT_ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"
APT_OPTIONS = ("-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
               "-o APT::Get::Assume-Yes=true")
LISTS_LOCK = "/var/lib/apt/lists/lock"

# dpkg-query's line per package: name, version, state, architecture.
DPKG_QUERY = (r"dpkg-query -W "
              r"-f='${Package}\t${Version}\t${db:Status-Abbrev}\t${Architecture}\n'")


class StepFailed(CorralError):
    """One step of updating one VM failed; the message says which and why."""

    def __init__(self, step: str, message: str):
        self.step = step
        super().__init__(f"{step}: {message}")


# ---- The report ---------------------------------------------------------------------------


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


# ---- Parsing apt, dpkg and npm ------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One line of apt's simulation: a package apt would install or upgrade."""

    name: str
    old: str | None
    new: str
    #: Where the new version comes from, as apt prints it (``Debian-Security:13/stable-security``).
    origins: tuple[str, ...]


_INST = re.compile(r"^Inst (\S+)(?: \[([^\]]*)\])? \((\S+) (.*?)(?: \[[^\]]*\])?\)")


def parse_simulation(text: str) -> list[Planned]:
    """The ``Inst`` lines of ``apt-get -s upgrade`` (or install, dist-upgrade).

    >>> parse_simulation("Inst zstd [1.5.7-1] (1.5.7-1+deb13u1 "
    ...                  "Debian-Security:13/stable-security [amd64])")[0].origins
    ('Debian-Security:13/stable-security',)
    """
    planned = []
    for line in text.splitlines():
        match = _INST.match(line)
        if not match:
            continue
        name, old, new, origins = match.groups()
        planned.append(Planned(name, old or None, new,
                               tuple(o.strip() for o in origins.split(", ") if o.strip())))
    return planned


def parse_releases(text: str) -> dict[str, dict[str, str]]:
    """The package sources of ``apt-cache policy``, keyed the way apt's simulation names them.

    Each ``release v=13,o=Debian,a=stable-security,...`` line becomes a dict of its fields
    (``o``, ``a``, ``n``, ``l``, ``c``, ``v``, plus ``site`` from the ``origin`` line),
    keyed ``label:version/archive`` (``Debian-Security:13/stable-security``).
    """
    releases: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("release "):
            fields = dict(part.split("=", 1) for part in line[8:].split(",") if "=" in part)
            if fields.get("a") == "now":
                current = None
                continue
            current = fields
            releases[_release_key(fields)] = fields
        elif line.startswith("origin ") and current is not None:
            current["site"] = line[7:].strip()
    return releases


def _release_key(fields: dict[str, str]) -> str:
    """How apt prints a release in its simulation: ``[label:][version/]archive``."""
    key = f"{fields['l']}:" if fields.get("l") else ""
    archive = fields.get("a", "")
    return key + (f"{fields['v']}/{archive}" if fields.get("v") else archive)


# unattended-upgrades' long and short key names.
_PATTERN_KEYS = {"origin": "o", "label": "l", "archive": "a", "suite": "a", "codename": "n",
                 "component": "c", "site": "site", "o": "o", "l": "l", "a": "a", "n": "n",
                 "c": "c"}


def matches_origin(pattern: str, release: dict[str, str]) -> bool:
    """Whether a release matches an unattended-upgrades ``Origins-Pattern`` entry.

    >>> matches_origin("origin=Debian,codename=trixie-security",
    ...                {"o": "Debian", "n": "trixie-security", "a": "stable-security"})
    True
    """
    for part in pattern.split(","):
        key, _, value = part.partition("=")
        field_name = _PATTERN_KEYS.get(key.strip())
        if field_name is None or release.get(field_name, "") != value.strip():
            return False
    return True


def security_plan(planned: list[Planned], releases: dict[str, dict[str, str]],
                  patterns: list[str]) -> list[Planned]:
    """The planned upgrades whose new version comes from a security origin."""
    chosen = []
    for item in planned:
        sources = [releases.get(origin) for origin in item.origins]
        if any(s and any(matches_origin(p, s) for p in patterns) for s in sources):
            chosen.append(item)
    return chosen


def parse_dpkg_query(text: str) -> dict[str, str]:
    """Installed packages and their versions from :data:`DPKG_QUERY`'s output.

    Names are bare, as apt prints them (``libzstd1``), unless a package is installed for
    several architectures: then each carries its own (``libc6:amd64``, ``libc6:i386``).
    """
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2][1:2] == "i":
            rows.append((parts[0], parts[1], parts[3] if len(parts) > 3 else ""))
    names = [name for name, _, _ in rows]
    return {(f"{name}:{arch}" if names.count(name) > 1 else name): version
            for name, version, arch in rows}


def diff_packages(before: dict[str, str], after: dict[str, str]
                  ) -> tuple[list[Change], list[Change], list[Change]]:
    """Upgraded (or changed), newly installed and removed packages, each sorted by name."""
    upgraded = [Change(n, "package", before[n], v) for n, v in sorted(after.items())
                if n in before and before[n] != v]
    installed = [Change(n, "package", None, v, "dependency") for n, v in sorted(after.items())
                 if n not in before]
    removed = [Change(n, "package", v, None) for n, v in sorted(before.items())
               if n not in after]
    return upgraded, installed, removed


def parse_npm_view(text: str) -> str:
    """The version ``npm view PACKAGE@latest version`` printed; "" when it printed none.

    >>> parse_npm_view("1.18.40\\n")
    '1.18.40'
    """
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    # Several matching versions print as "pkg@1.2.3 '1.2.3'"; the last is the newest.
    version = lines[-1].split()[-1].strip("'\"")
    return version if re.fullmatch(r"\d+\.\d+\.\d+\S*", version) else ""


def parse_reboot(text: str) -> tuple[bool, list[str]]:
    """Whether ``/var/run/reboot-required`` exists and the packages its .pkgs file names.

    The guest script prints ``reboot=yes`` or ``reboot=no``, then one package a line.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    required = "reboot=yes" in lines
    packages = sorted({line for line in lines if not line.startswith("reboot=")})
    return required, packages if required else []


# ---- Running commands in a VM -------------------------------------------------------------


@dataclass
class Guest:
    """One VM reached over its own ssh.config, commands run as root with sudo."""

    name: str
    ssh_config: Path
    ssh_host: str

    def run(self, script: str, step: str, timeout: float = STEP_TIMEOUT) -> str:
        """Run a shell script as root in the VM; its stdout, or :class:`StepFailed`."""
        argv = ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.ssh_host,
                "sudo", "-n", "sh", "-s"]
        log.debug("%s: %s", self.name, step)
        try:
            result = subprocess.run(argv, input="set -u\n" + script, capture_output=True,
                                    text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise StepFailed(step, f"no answer after {timeout:.0f}s") from None
        if result.returncode != 0:
            raise StepFailed(step, _last_line(result.stderr or result.stdout))
        return result.stdout


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "failed without a message"


def refresh_script(lock_timeout: int) -> str:
    """apt-get update, waiting (up to ``lock_timeout`` s) for another apt to finish."""
    return f"""
deadline=$(( $(date +%s) + {lock_timeout} ))
while :; do
  if out=$({APT_ENV} apt-get -o DPkg::Lock::Timeout={lock_timeout} -q update 2>&1); then
    break
  fi
  case "$out" in
    *{LISTS_LOCK}*)
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "another apt kept {LISTS_LOCK} for {lock_timeout}s; try again later" >&2
        exit 1
      fi
      sleep 5 ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
done
"""


def state_script() -> str:
    """Installed packages, the apt sources and what apt would upgrade, in marked sections."""
    return f"""
echo '@@dpkg'; {DPKG_QUERY}
echo '@@os'; . /etc/os-release; echo "$ID"; echo "${{VERSION_CODENAME:-}}"
echo '@@releases'; apt-cache policy
echo '@@simulation'; apt-get -s -o Debug::NoLocking=1 upgrade --with-new-pkgs
echo '@@reboot'
if [ -f /var/run/reboot-required ]; then
  echo reboot=yes; cat /var/run/reboot-required.pkgs 2>/dev/null || true
else
  echo reboot=no
fi
"""


def sections(text: str) -> dict[str, str]:
    """The ``@@name`` sections of a guest script's output."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = found.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line)
    return {key: "\n".join(lines) for key, lines in found.items()}


def upgrade_script(packages: list[str], lock_timeout: int) -> str:
    """Upgrade exactly ``packages`` (never install one that is not there yet)."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (f"{APT_ENV} apt-get -q {APT_OPTIONS} -o DPkg::Lock::Timeout={lock_timeout} "
            f"install --only-upgrade {names}\n")


def upgrade_all_script(lock_timeout: int) -> str:
    """Every pending upgrade, with new dependencies but no removals."""
    return (f"{APT_ENV} apt-get -q {APT_OPTIONS} -o DPkg::Lock::Timeout={lock_timeout} "
            "upgrade --with-new-pkgs\n")


# ---- Tools: gh, OpenCode and the toolchains -----------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A tool a role installs at a version vm.update keeps current."""

    name: str  # as shown in the report
    role: str  # the role that installs it
    key: str  # its version key in the role's section (``version``, ``uv_version``)
    applies: Callable[[dict[str, Any]], bool]
    # The installed version, from the roles' guest probe (None when not installed).
    installed: Callable[[dict[str, Any], str], str | None]
    # Whether ``track: latest`` can be followed (release tarballs need pinned sums).
    can_track: bool = True


def _rust_installed(facts: dict[str, Any], wanted: str) -> str | None:
    """The pinned toolchain when rustup has it, else the first one it has."""
    names = [t.split("-")[0] for t in facts.get("rust_toolchains") or []]
    return wanted if wanted in names else (names[0] if names else None)


TOOLS = (
    Tool("opencode-ai", "opencode", "version", lambda d: d.get("opencode_source") == "npm",
         lambda f, _: f.get("opencode_npm") or None),
    Tool("opencode", "opencode", "version", lambda d: d.get("opencode_source") == "release",
         lambda f, _: f.get("opencode_release") or None, can_track=False),
    Tool("uv", "python", "uv_version", lambda d: "python" in d["toolchains"],
         lambda f, _: f.get("uv") or None),
    Tool("go", "go", "version",
         lambda d: "go" in d["toolchains"] and d.get("go_source") == "official",
         lambda f, _: (f.get("go") or "").removeprefix("go") or None),
    Tool("rust", "rust", "toolchain",
         lambda d: "rust" in d["toolchains"] and d.get("rust_source") == "rustup",
         _rust_installed, can_track=False),
)


# Tools that come from a third-party apt repository: brought to the newest version there.
APT_TOOLS = (
    ("gh", lambda d: d.get("gh_source") == "github"),
    ("nodejs", lambda d: "node" in d["toolchains"] and d.get("nodejs_source") == "nodesource"),
)


def latest_npm(guest: Guest, package: str) -> str:
    """The version npm's ``latest`` tag points at, asked from inside the VM."""
    from deploy.roles.common import SYSTEM_CA_BUNDLE

    out = guest.run(f"NODE_EXTRA_CA_CERTS={SYSTEM_CA_BUNDLE} npm_config_update_notifier=false "
                    f"npm view {shlex.quote(package)}@latest version\n",
                    f"asking npm for the latest {package}", timeout=120)
    version = parse_npm_view(out)
    if not version:
        raise StepFailed(f"asking npm for the latest {package}", f"unexpected answer {out!r}")
    return version


def latest_pypi(package: str) -> str:
    """The newest release of ``package`` on the Python package index uv uses."""
    step = f"asking the package index for the latest {package}"
    try:
        result = subprocess.run(["uv", "pip", "compile", "--no-header", "--no-annotate",
                                 "--quiet", "-"], input=f"{package}\n", capture_output=True,
                                text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise StepFailed(step, str(err)) from None
    match = re.search(rf"^{re.escape(package)}==(\S+)", result.stdout, re.M)
    if result.returncode != 0 or not match:
        raise StepFailed(step, _last_line(result.stderr))
    return match.group(1)


def newest_go_patch(pinned: str, releases: list[dict[str, Any]], arch: str
                    ) -> tuple[str, str]:
    """The newest stable release of the pinned Go line, and its sha256 for ``arch``.

    + pinned: the pinned version, ``1.26.7``
    + releases: go.dev/dl's ``?mode=json&include=all`` document
    + arch: ``amd64`` or ``arm64``
    """
    line = ".".join(pinned.split(".")[:2])
    best: tuple[tuple[int, ...], str, str] | None = None
    for release in releases:
        version = str(release.get("version", "")).removeprefix("go")
        if not release.get("stable") or not re.fullmatch(rf"{re.escape(line)}(\.\d+)?",
                                                         version):
            continue
        for item in release.get("files", []):
            if (item.get("os"), item.get("arch"), item.get("kind")) == ("linux", arch,
                                                                         "archive"):
                key = tuple(int(p) for p in version.split("."))
                if best is None or key > best[0]:
                    best = (key, version, item.get("sha256", ""))
    if best is None:
        raise StepFailed("finding the newest Go", f"no stable go{line}.x for linux-{arch}")
    return best[1], best[2]


def latest_go(url: str, pinned: str, arch: str) -> tuple[str, str]:
    """Ask the Go download site for the newest patch of the pinned line."""
    import urllib.request

    step = "finding the newest Go"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/?mode=json&include=all",  # noqa: S310
                                    timeout=60) as answer:
            releases = json.loads(answer.read())
    except (OSError, ValueError) as err:
        raise StepFailed(step, f"{url}: {err}") from None
    return newest_go_patch(pinned, releases, arch)


# ---- Updating one VM ----------------------------------------------------------------------


def update_vm(vm: VM, guest: Guest, provision: Callable[[VM, list[str]], None],
              report: VMReport | None = None) -> VMReport:
    """Update one running VM and report what changed.

    + vm: the VM of the inventory
    + guest: how to reach it
    + provision: runs roles on a VM (the provisioning runner, see :func:`_provision`)
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
            raise CorralError(f"{_last_line(str(err))} (pyinfra's output: {log_file})") from None


# ---- The task -----------------------------------------------------------------------------


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


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
