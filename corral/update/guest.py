"""Running vm.update's shell scripts as root in a VM over ssh, and the scripts themselves."""

from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError

log = logging.getLogger(__name__)

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
            raise StepFailed(step, last_line(result.stderr or result.stdout))
        return result.stdout


def last_line(text: str) -> str:
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

