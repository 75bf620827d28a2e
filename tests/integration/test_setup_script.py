"""scripts/agent-vm.setup.sh in a real Debian 13 guest: installs what is missing, then nothing.

Lima VMs cannot boot here, so the in-VM bootstrap runs in an Incus container made from
corral's image, fed on stdin exactly as the by-hand command does
(``limactl shell NAME bash -l < scripts/agent-vm.setup.sh``), as root (what Lima's
`system` provision step does) and as a login user with sudo.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from corral import paths
from tests.fixtures.incus import IMAGE_ALIAS, force_delete, unique_name

pytestmark = pytest.mark.integration

SCRIPT = paths.SCRIPTS / "agent-vm.setup.sh"
STAMP = "/run/corral/agent-vm.setup.done"
NEEDRESTART_CONF = "/etc/needrestart/conf.d/50-corral.conf"


def _exec(name: str, command: str, *, user: int = 0) -> subprocess.CompletedProcess:
    argv = ["incus", "exec", name, "--user", str(user)]
    if user:
        argv += ["--env", "HOME=/home/agent"]
    return subprocess.run([*argv, "--", "sh", "-c", command], capture_output=True, text=True,
                          timeout=300, check=False)


def _setup(name: str, *, user: int = 0) -> subprocess.CompletedProcess:
    """Run the script as the by-hand command does: bash -l reading it from stdin."""
    argv = ["incus", "exec", name, "--user", str(user)]
    if user:
        argv += ["--env", "HOME=/home/agent"]
    with SCRIPT.open() as script:
        result = subprocess.run([*argv, "--", "bash", "-l"], stdin=script, capture_output=True,
                                text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _installed(name: str, package: str) -> bool:
    status = _exec(name, f"dpkg-query -W -f='${{Status}}' {package}").stdout
    return status == "install ok installed"


@pytest.fixture(scope="module")
def guest(incus):
    """A fresh container of corral's debian-13 image, without sudo, with needrestart's folder."""
    name = unique_name("setup")
    subprocess.run(["incus", "launch", IMAGE_ALIAS, name], capture_output=True, check=True,
                   timeout=300)
    try:
        deadline = time.monotonic() + 120
        while _exec(name, "ip -4 addr show eth0 | grep -q inet").returncode != 0:
            assert time.monotonic() < deadline, f"{name} got no IPv4 address"
            time.sleep(2)
        prepared = _exec(name, "DEBIAN_FRONTEND=noninteractive SUDO_FORCE_REMOVE=yes "
                               "apt-get purge -y sudo && mkdir -p /etc/needrestart/conf.d")
        assert prepared.returncode == 0, prepared.stderr
        yield name
    finally:
        force_delete(name)


def test_first_run_installs_what_is_missing_and_tells_the_probe(guest):
    assert not _installed(guest, "sudo")

    _setup(guest)

    assert _installed(guest, "sudo")
    assert _installed(guest, "ca-certificates")
    assert _exec(guest, f"test -e {STAMP}").returncode == 0
    conf = _exec(guest, f"cat {NEEDRESTART_CONF}").stdout
    assert conf.count("$nrconf{restart} = 'a';") == 1


def test_second_run_changes_nothing(guest):
    before = _exec(guest, f"stat -c %Y {NEEDRESTART_CONF}; ls -l --time-style=+%s "
                          "/var/lib/dpkg/status").stdout

    result = _setup(guest)

    assert "apt-get" not in result.stderr
    assert "tee" not in result.stderr
    after = _exec(guest, f"stat -c %Y {NEEDRESTART_CONF}; ls -l --time-style=+%s "
                         "/var/lib/dpkg/status").stdout
    assert after == before


def test_by_hand_as_a_login_user_it_uses_sudo_and_reads_all_of_stdin(guest):
    prepared = _exec(guest, "useradd -m -d /home/agent -u 1001 -s /bin/bash agent && "
                            "echo 'agent ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/agent && "
                            "DEBIAN_FRONTEND=noninteractive apt-get purge -y ca-certificates "
                            f"&& rm -f {STAMP}")
    assert prepared.returncode == 0, prepared.stderr

    result = _setup(guest, user=1001)

    assert "+ sudo -n env DEBIAN_FRONTEND=noninteractive" in result.stderr
    assert _installed(guest, "ca-certificates")
    # The stamp is the script's last step: apt did not swallow the rest of the script.
    assert _exec(guest, f"test -e {STAMP}").returncode == 0
