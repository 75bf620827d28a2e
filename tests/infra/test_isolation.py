"""Isolation: the project is the only host folder in the VM; no home, agent or key of the host."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from tests.infra.guest import mounts, run_as

# File system types that are the guest's own (kernel, container runtime, Lima's cloud-init
# disk): never a host folder.
GUEST_OWN_TYPES = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fuse.lxcfs", "fusectl", "hugetlbfs", "iso9660", "mqueue",
    "nsfs", "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs",
    "tmpfs", "tracefs",
})
# Places where only the system mounts things.
GUEST_OWN_PLACES = ("/proc", "/sys", "/dev", "/run", "/boot")

PRIVATE_KEY = "-----BEGIN ([A-Z0-9]+ )?PRIVATE KEY-----"


def _within(path: str, folder: str) -> bool:
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/")


def shared_mounts(host) -> list[dict[str, str]]:
    """The mounts that can only come from the host: everything but the guest's own."""
    return [m for m in mounts(host)
            if m["target"] != "/"
            and m["fstype"] not in GUEST_OWN_TYPES
            and not any(_within(m["target"], place) for place in GUEST_OWN_PLACES)]


def project_mount(host, data) -> dict[str, str]:
    if data["mount"] == "none":
        pytest.skip("this VM shares no project folder (mount: none)")
    found = [m for m in shared_mounts(host) if m["target"] == data["mount_point"]]
    assert found, f"the project is not mounted at {data['mount_point']}"
    return found[-1]


def test_only_the_project_folder_is_shared_with_the_vm(host, data):
    wanted = [] if data["mount"] == "none" else [data["mount_point"]]

    targets = sorted({m["target"] for m in shared_mounts(host)})

    extra = [t for t in targets if t not in wanted]
    besides = "besides the project" if wanted else "though mount is none"
    assert not extra, f"host folders mounted {besides}: {', '.join(extra)}"
    assert targets == wanted, f"mounted: {targets or 'nothing'}, expected {wanted}"


def test_project_mount_holds_the_configured_project(host, data, vm):
    mount = project_mount(host, data)

    listing = host.run("ls -A1 %s", mount["target"])

    assert listing.rc == 0, f"cannot list {mount['target']}: {listing.stderr.strip()}"
    assert sorted(listing.stdout.splitlines()) == sorted(os.listdir(vm.project)), (
        f"{mount['target']} does not show the files of {vm.project}")


def test_project_is_mounted_with_the_configured_mode(host, data, agent_user):
    mount = project_mount(host, data)
    options = mount["options"].split(",")
    probe = f"{mount['target']}/.corral-verify-write-probe"

    if data["mount"] == "readonly":
        assert "ro" in options, f"{mount['target']} is mounted {options[0]}, not read-only"
        write = run_as(host, agent_user, f"touch {shlex.quote(probe)}")
        if write.rc == 0:
            run_as(host, agent_user, f"rm -f {shlex.quote(probe)}")
        assert write.rc != 0, f"{agent_user} could write into the read-only project"
    else:
        assert "rw" in options, f"{mount['target']} is mounted {options[0]}, not writable"
        writable = run_as(host, agent_user, f"test -w {shlex.quote(mount['target'])}")
        assert writable.rc == 0, f"{agent_user} cannot write into {mount['target']}"


def test_no_part_of_the_host_home_is_mounted(host, data):
    home = str(Path.home().resolve())
    found = []
    for mount in shared_mounts(host):
        # Where the folder sits on the host: an Incus bind's root, an sshfs source path.
        host_side = [mount["root"]]
        if ":" in mount["source"]:
            host_side.append(mount["source"].split(":", 1)[1])
        if mount["target"] == data["mount_point"] and data["mount"] != "none":
            # The project may live below the home folder, but never be the home itself.
            if any(_within(home, side) for side in host_side if side != "/"):
                found.append(mount["target"])
            continue
        if _within(mount["target"], home) or any(_within(side, home) for side in host_side):
            found.append(mount["target"])

    assert not found, f"part of the host home {home} is mounted at: {', '.join(found)}"


SHOW_AGENT = 'printf %s "${SSH_AUTH_SOCK:-}"'


@pytest.mark.parametrize("shell", ["non-login", "login"])
def test_no_ssh_agent_is_forwarded(host, login_user, agent_user, shell):
    command = SHOW_AGENT if shell == "non-login" else f"exec bash -lc {shlex.quote(SHOW_AGENT)}"
    for user in dict.fromkeys([login_user, agent_user]):
        sock = run_as(host, user, command)

        assert sock.rc == 0, f"a {shell} shell of {user} failed: {sock.stderr.strip()}"
        assert sock.stdout == "", f"SSH_AUTH_SOCK is set in a {shell} shell of {user}"


def test_no_private_key_is_in_the_guests_ssh_folders(host, login_user, agent_user):
    for user in dict.fromkeys([login_user, agent_user]):
        ssh_dir = f"{host.user(user).home}/.ssh"
        keys = run_as(host, user, f"grep -rlE -- {shlex.quote(PRIVATE_KEY)} "
                                  f"{shlex.quote(ssh_dir)} 2>/dev/null || true")
        assert keys.stdout.split() == [], (
            f"private keys in {ssh_dir}: {', '.join(keys.stdout.split())}")
