"""A daily `vm.update` on this host: a systemd user timer, a launchd agent or a crontab line."""

from __future__ import annotations

import logging
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral import output, paths
from corral.config import inventory_path
from corral.errors import CorralError, HostError

log = logging.getLogger(__name__)

UNIT = "corral-update"
LAUNCHD_LABEL = "dev.corral.update"
# Ends the crontab line corral owns, so that it can be found, replaced and removed.
CRON_MARK = "# corral: vm.update (uv run invoke host.schedule-update)"
LOG_NAME = "update.log"
SCRIPT_NAME = "update-job.sh"
# Lines the job script writes around each run; status() reads the last ones back.
STARTED = "== vm.update started"
ENDED = "== vm.update ended"
# What each exit code of vm.update means (corral.update documents them).
EXIT_MEANINGS = {0: "all updated", 1: "a failure, see the log", 3: "a reboot is required"}

_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass
class Host:
    """What the schedule touches on this host; tests swap in a temporary home and fakes.

    + home: the user's home folder (unit files, the launchd plist live below it)
    + platform: ``sys.platform`` (``darwin`` picks launchd)
    + systemctl: the command that drives the user's systemd (``systemctl --user``)
    + launchctl: the launchd command
    + crontab: the crontab command (``crontab -l`` reads, ``crontab -`` writes)
    + uid: the user id launchd's ``gui/UID`` domain is named after
    """

    home: Path = field(default_factory=Path.home)
    platform: str = sys.platform
    systemctl: Sequence[str] = ("systemctl", "--user")
    launchctl: Sequence[str] = ("launchctl",)
    crontab: Sequence[str] = ("crontab",)
    uid: int = field(default_factory=os.getuid)

    @property
    def timer_file(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / f"{UNIT}.timer"

    @property
    def service_file(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / f"{UNIT}.service"

    @property
    def plist_file(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"

    def has_user_systemd(self) -> bool:
        """True when a systemd user manager answers (systemd is PID 1 and the user has one)."""
        if not shutil.which(self.systemctl[0]):
            return False
        try:
            result = subprocess.run([*self.systemctl, "show-environment"], capture_output=True,
                                    text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def has_crontab(self) -> bool:
        return shutil.which(self.crontab[0]) is not None

    def backend(self) -> str:
        """``launchd`` on macOS, ``systemd`` with a user manager, else ``cron``."""
        if self.platform == "darwin":
            return "launchd"
        if self.has_user_systemd():
            return "systemd"
        if self.has_crontab():
            return "cron"
        raise HostError(
            "host.schedule-update: no systemd user manager and no crontab on this host "
            "(install cron, e.g. 'sudo apt-get install cron', or run vm.update from your "
            "own scheduler)"
        )


def parse_at(at: str) -> tuple[int, int]:
    """Hour and minute of a ``HH:MM`` time of day; one clear line when it is not one.

    >>> parse_at("4:05")
    (4, 5)
    """
    match = _AT.match(str(at).strip())
    if not match:
        raise CorralError(f"--at {at!r}: not a time of day (use HH:MM on a 24-hour clock, "
                          "e.g. --at 04:00)")
    return int(match.group(1)), int(match.group(2))


def job_script(uv: str, inventory: Path, config: Path, state: Path, path_env: str) -> str:
    """The shell script every backend runs: vm.update from corral's checkout, logged.

    + uv: absolute path of ``uv`` (schedulers run with a bare PATH)
    + inventory: the inventory in use when the schedule was installed
    + config: corral's config folder (its SSH key lives there)
    + state: corral's state folder, where ``update.log`` is kept
    + path_env: the PATH vm.update runs with (it needs incus or limactl, ssh)
    """
    log_file = state / LOG_NAME
    q = shlex.quote
    return "\n".join([
        "#!/bin/sh",
        "# Written by corral (uv run invoke host.schedule-update): runs vm.update, logs it.",
        "# Remove the schedule with: uv run invoke host.schedule-update --remove",
        "set -u",
        f"export PATH={q(path_env)}",
        f"export CORRAL_INVENTORY={q(str(inventory))}",
        f"export CORRAL_CONFIG_DIR={q(str(config))}",
        f"export CORRAL_STATE_DIR={q(str(state))}",
        f"log={q(str(log_file))}",
        'mkdir -p "$(dirname "$log")"',
        "# Keep the log small: start a new one past 1 MiB, keeping the previous one.",
        'if [ -f "$log" ] && [ "$(wc -c < "$log")" -gt 1048576 ]; then mv "$log" "$log.1"; fi',
        f'echo "{STARTED} $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"',
        f"cd {q(str(paths.ROOT))} && {q(uv)} run invoke vm.update >> \"$log\" 2>&1",
        "rc=$?",
        f'echo "{ENDED} $(date -u +%Y-%m-%dT%H:%M:%SZ) exit $rc" >> "$log"',
        "exit $rc",
        "",
    ])


def timer_unit(hour: int, minute: int) -> str:
    """The systemd timer: daily at the given local time, caught up after a missed run."""
    return "\n".join([
        "# Written by corral (uv run invoke host.schedule-update).",
        "[Unit]",
        "Description=corral: update the agent VMs (vm.update)",
        "",
        "[Timer]",
        f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00",
        "# Run at the next boot when the machine was off at that time.",
        "Persistent=true",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])


def service_unit(script: Path) -> str:
    """The systemd service the timer starts: one run of the job script."""
    return "\n".join([
        "# Written by corral (uv run invoke host.schedule-update).",
        "[Unit]",
        "Description=corral: update the agent VMs (vm.update)",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart=/bin/sh {_systemd_quote(str(script))}",
        "# vm.update exits 3 when a VM needs a reboot: that is news, not a failure.",
        "SuccessExitStatus=3",
        "",
    ])


def launchd_plist(script: Path, hour: int, minute: int) -> bytes:
    """The launchd agent: the job script every day at the given local time."""
    return plistlib.dumps({
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": ["/bin/sh", str(script)],
        "StartCalendarInterval": {"Hour": hour, "Minute": minute},
        "RunAtLoad": False,
    })


def cron_line(script: Path, hour: int, minute: int) -> str:
    """The crontab line: the job script every day at the given local time, marked as corral's."""
    return f"{minute} {hour} * * * /bin/sh {shlex.quote(str(script))} {CRON_MARK}"


def install(at: str = "04:00", *, host: Host | None = None) -> None:
    """Install (or move to a new time) the daily vm.update; nothing to do when already so.

    + at: local time of day, ``HH:MM``
    + host: the host to install on (default: this one, for the current user)

    The job runs ``uv run invoke vm.update`` from corral's checkout with the inventory in
    use now, and appends to ``update.log`` in corral's state folder.
    """
    hour, minute = parse_at(at)
    host = host or Host()
    backend = host.backend()
    uv = shutil.which("uv")
    if not uv:
        raise HostError("host.schedule-update: uv not found on PATH (install uv first: "
                        "https://docs.astral.sh/uv/getting-started/installation/)")
    state, config = paths.state_dir().resolve(), paths.config_dir().resolve()
    script = config / SCRIPT_NAME
    changed = _write(script, job_script(uv, inventory_path().resolve(), config, state,
                                        os.environ.get("PATH", "/usr/bin:/bin")), mode=0o755)

    # Hand the script to the scheduler this host has.
    if backend == "systemd":
        changed |= _write(host.service_file, service_unit(script))
        changed |= _write(host.timer_file, timer_unit(hour, minute))
        if changed:
            _call(host.systemctl, "daemon-reload")
        _call(host.systemctl, "enable", "--now", f"{UNIT}.timer")
        where = f"systemd user timer {UNIT}.timer"
    elif backend == "launchd":
        changed |= _write(host.plist_file, launchd_plist(script, hour, minute))
        if changed:
            domain = f"gui/{host.uid}"
            _call(host.launchctl, "bootout", domain, str(host.plist_file), check=False)
            _call(host.launchctl, "bootstrap", domain, str(host.plist_file))
        where = f"launchd agent {LAUNCHD_LABEL}"
    else:
        current = _read_crontab(host)
        kept = [line for line in current if not line.endswith(CRON_MARK)]
        wanted = [*kept, cron_line(script, hour, minute)]
        if wanted != current:
            _write_crontab(host, wanted)
            changed = True
        where = "crontab line"

    if not changed:
        output.say(f"vm.update already scheduled daily at {hour:02d}:{minute:02d} ({where}), "
                   "nothing to do")
        return
    output.say(f"vm.update scheduled daily at {hour:02d}:{minute:02d} ({where}); "
               f"log: {state / LOG_NAME}")
    if backend == "systemd" and not _lingering():
        output.warn("the timer only runs while you are logged in; to run it always: "
                    f"sudo loginctl enable-linger {_user()}")


def remove(*, host: Host | None = None) -> None:
    """Remove the schedule from every place corral may have put it (nothing to do if none)."""
    host = host or Host()
    removed = []

    # The systemd timer and its service.
    if host.timer_file.exists() or host.service_file.exists():
        if host.has_user_systemd():
            _call(host.systemctl, "disable", "--now", f"{UNIT}.timer", check=False)
        host.timer_file.unlink(missing_ok=True)
        host.service_file.unlink(missing_ok=True)
        if host.has_user_systemd():
            _call(host.systemctl, "daemon-reload", check=False)
        removed.append(f"systemd user timer {UNIT}.timer")

    # The launchd agent.
    if host.plist_file.exists():
        if host.platform == "darwin":
            _call(host.launchctl, "bootout", f"gui/{host.uid}", str(host.plist_file),
                  check=False)
        host.plist_file.unlink()
        removed.append(f"launchd agent {LAUNCHD_LABEL}")

    # The crontab line.
    if host.has_crontab():
        current = _read_crontab(host)
        kept = [line for line in current if not line.endswith(CRON_MARK)]
        if kept != current:
            _write_crontab(host, kept)
            removed.append("crontab line")

    script = paths.config_dir() / SCRIPT_NAME
    if script.exists():
        script.unlink()
    if not removed:
        output.say("no vm.update schedule installed, nothing to do")
        return
    output.say(f"vm.update schedule removed ({', '.join(removed)}); "
               f"the log stays in {paths.state_dir() / LOG_NAME}")


def status(*, host: Host | None = None) -> str | None:
    """One line for host.doctor: when vm.update is scheduled, when it last ran, how it ended.

    Returns None when no schedule is installed.

    Example: ``vm.update daily at 04:00 (systemd user timer); last run
    2026-12-03T04:00:12Z: exit 0 (all updated)``.
    """
    host = host or Host()
    found = _installed(host)
    if found is None:
        return None
    where, at = found
    return f"vm.update daily at {at} ({where}); {last_run(paths.state_dir())}"


def last_run(state: Path) -> str:
    """How the last scheduled run went, read from the markers in ``update.log``."""
    log_file = state / LOG_NAME
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "has not run yet"
    started = ended = None
    for line in lines:
        if line.startswith(STARTED):
            started, ended = line.removeprefix(STARTED).strip(), None
        elif line.startswith(ENDED):
            ended = line.removeprefix(ENDED).strip()
    if started is None:
        return "has not run yet"
    if ended is None:
        return f"running since {started} (or cut off; see {log_file})"
    when, _, code = ended.partition(" exit ")
    try:
        meaning = EXIT_MEANINGS.get(int(code), "a failure, see the log")
    except ValueError:
        meaning = "unknown end, see the log"
    return f"last run {when}: exit {code} ({meaning})"


def _installed(host: Host) -> tuple[str, str] | None:
    """Which schedule is installed, and at what time (``HH:MM``), or None."""
    if host.timer_file.exists():
        match = re.search(r"^OnCalendar=\S+ (\d\d):(\d\d)", host.timer_file.read_text(), re.M)
        if match:
            return "systemd user timer", f"{match.group(1)}:{match.group(2)}"
    if host.plist_file.exists():
        try:
            when = plistlib.loads(host.plist_file.read_bytes())["StartCalendarInterval"]
            return "launchd agent", f"{int(when['Hour']):02d}:{int(when['Minute']):02d}"
        except (plistlib.InvalidFileException, KeyError, TypeError, ValueError):
            log.debug("unreadable %s", host.plist_file)
    if host.has_crontab():
        for line in _read_crontab(host):
            if line.endswith(CRON_MARK):
                minute, hour = line.split()[:2]
                if minute.isdigit() and hour.isdigit():
                    return "crontab", f"{int(hour):02d}:{int(minute):02d}"
                return "crontab", f"'{minute} {hour}' (minute, hour)"
    return None


def _read_crontab(host: Host) -> list[str]:
    result = subprocess.run([*host.crontab, "-l"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # "no crontab for user" is an empty crontab, not an error.
        return []
    return result.stdout.splitlines()


def _write_crontab(host: Host, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n" if lines else ""
    result = subprocess.run([*host.crontab, "-"], input=text, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise HostError(f"crontab: could not write the crontab ({result.stderr.strip()})")


def _write(path: Path, content: str | bytes, mode: int = 0o644) -> bool:
    """Write ``content`` unless the file already holds it; True when it changed."""
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".corral.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
    log.debug("wrote %s", path)
    return True


def _call(command: Sequence[str], *args: str, check: bool = True) -> None:
    argv = [*command, *args]
    log.debug("running %s", shlex.join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise HostError(f"{shlex.join(argv)}: {last[-1] if last else 'failed'}")


def _systemd_quote(value: str) -> str:
    """A path as one systemd ExecStart argument (``$`` and ``%`` are special there)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def _lingering() -> bool:
    return Path("/var/lib/systemd/linger", _user()).exists()


def _user() -> str:
    return os.environ.get("USER") or Path.home().name
