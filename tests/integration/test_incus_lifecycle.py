"""Incus containers for real: create, reach over SSH, share the project, stop, start, delete."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from corral import image
from tests.conftest import need
from tests.fixtures.incus import (
    corral_env,
    force_delete,
    run_invoke,
    ssh_run,
    unique_name,
    write_inventory,
)

pytestmark = pytest.mark.integration


class Created:
    """A container made by ``vm.create`` from a throw-away inventory."""

    def __init__(self, folder: Path, **overrides):
        self.name = unique_name()
        self.folder = folder
        self.inventory = write_inventory(folder, self.name, **overrides)
        self.env = corral_env(folder, self.inventory)
        self.project = folder / "project"
        self.state = folder / "state" / "incus" / self.name
        self.host = f"incus-{self.name}"
        self.mount_point = "/work/project"

    def create(self) -> Created:
        run_invoke("vm.create", "--name", self.name, env=self.env)
        return self

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return ssh_run(self.state / "ssh.config", self.host, command, check=check)

    def incus_config(self) -> dict:
        shown = subprocess.run(["incus", "query", f"/1.0/instances/{self.name}"],
                               capture_output=True, text=True, check=True)
        return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def writable(incus, tmp_path_factory):
    vm = Created(tmp_path_factory.mktemp("writable"))
    try:
        yield vm.create()
    finally:
        run_invoke("vm.delete", "--name", vm.name, "--yes", env=vm.env, check=False)
        force_delete(vm.name)


@pytest.fixture
def fresh(incus, tmp_path):
    """Build a container per test with the given overrides; deleted afterwards."""
    made: list[Created] = []

    def make(**overrides) -> Created:
        vm = Created(tmp_path / f"vm{len(made)}", **overrides)
        made.append(vm)
        return vm.create()

    yield make
    for vm in made:
        run_invoke("vm.delete", "--name", vm.name, "--yes", env=vm.env, check=False)
        force_delete(vm.name)


def test_create_makes_a_container_corral_marks_as_its_own(writable):
    config = writable.incus_config()

    assert config["status"] == "Running"
    assert config["config"]["user.corral.managed"] == "true"
    assert config["config"]["limits.cpu"] == "2"
    assert config["config"]["limits.memory"] == "2048MiB"
    assert config["expanded_devices"]["root"]["size"] == "10GiB"


def test_ssh_with_the_written_config_works_with_strict_host_key_checking(writable):
    result = writable.ssh("id -un")

    assert result.stdout.strip() == "corral"
    assert "StrictHostKeyChecking yes" in (writable.state / "ssh.config").read_text()


def test_ssh_refuses_the_container_without_corral_known_hosts(writable):
    result = subprocess.run(
        ["ssh", "-F", str(writable.state / "ssh.config"), "-o", "UserKnownHostsFile=/dev/null",
         writable.host, "true"], capture_output=True, text=True, check=False)

    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_login_user_has_passwordless_sudo(writable):
    assert writable.ssh("sudo -n id -u").stdout.strip() == "0"


def test_project_is_visible_and_writable_at_the_mount_point(writable):
    (writable.project / "from-host.txt").write_text("hello from the host\n")

    seen = writable.ssh(f"cat {writable.mount_point}/from-host.txt").stdout
    writable.ssh(f"echo written in the guest > {writable.mount_point}/from-guest.txt")

    assert seen == "hello from the host\n"
    assert (writable.project / "from-guest.txt").read_text() == "written in the guest\n"


def test_nothing_of_the_host_but_the_project_is_shared(writable):
    devices = writable.incus_config()["expanded_devices"]
    disks = {name: d for name, d in devices.items() if d["type"] == "disk"}

    assert set(disks) == {"root", "project"}
    assert disks["project"]["source"] == str(writable.project)
    assert disks["project"]["shift"] == "true"
    home = str(Path.home())
    mounts = writable.ssh("cat /proc/self/mountinfo").stdout
    assert f" {home} " not in mounts
    assert f" {home}/" not in mounts


def test_extra_ca_is_trusted_and_apt_works_over_https_through_it(writable):
    certs = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    bundle = writable.ssh("cat /etc/ssl/certs/ca-certificates.crt").stdout

    # The same sources over https: only possible when the proxy's CA is trusted.
    result = writable.ssh(
        "set -e; mkdir -p /tmp/https && sed 's#http://#https://#' "
        "/etc/apt/sources.list.d/debian.sources > /tmp/https/debian.sources && "
        "sudo apt-get update --error-on=any -o Dir::Etc::SourceList=/dev/null "
        "-o Dir::Etc::SourceParts=/tmp/https", check=False)

    assert certs, "the host has no CA files to hand to the guest"
    for cert in certs:
        body = "".join(cert.read_text().split("-----")[2].split())
        assert body[:200] in "".join(bundle.split())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "https://" in result.stdout
    assert "Failed to fetch" not in result.stdout + result.stderr


def test_vm_shell_passes_the_exit_status_and_starts_in_the_project(writable):
    result = run_invoke("vm.shell", "--name", writable.name, "--command", "pwd; exit 7",
                        env=writable.env, check=False)

    assert result.returncode == 7
    assert result.stdout.strip() == writable.mount_point


def test_vm_list_shows_the_container_running(writable):
    rows = json.loads(run_invoke("vm.list", "--json", env=writable.env).stdout)

    assert rows[0]["name"] == writable.name
    assert rows[0]["provider"] == "incus"
    assert rows[0]["status"] == "running"
    assert rows[0]["ssh_config"] == str(writable.state / "ssh.config")


def test_stop_then_start_keeps_it_reachable(writable):
    run_invoke("vm.stop", "--name", writable.name, env=writable.env)
    stopped = writable.incus_config()["status"]

    run_invoke("vm.start", "--name", writable.name, env=writable.env)

    assert stopped == "Stopped"
    assert writable.ssh("true").returncode == 0


def test_readonly_mount_refuses_writes_even_for_root(fresh):
    vm = fresh(mount="readonly")
    (vm.project / "seen.txt").write_text("read me\n")

    seen = vm.ssh(f"cat {vm.mount_point}/seen.txt").stdout
    refused = vm.ssh(f"sudo touch {vm.mount_point}/new.txt", check=False)

    assert seen == "read me\n"
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    assert not (vm.project / "new.txt").exists()


def test_mount_none_shares_nothing(fresh):
    vm = fresh(mount="none")

    devices = vm.incus_config()["expanded_devices"]

    assert "project" not in devices
    assert vm.ssh(f"test -e {vm.mount_point}", check=False).returncode != 0


def test_delete_leaves_no_container_no_volume_and_no_corral_files(fresh):
    vm = fresh()
    assert vm.state.exists()

    run_invoke("vm.delete", "--name", vm.name, "--yes", env=vm.env)

    listed = subprocess.run(["incus", "list", vm.name, "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    volumes = subprocess.run(["incus", "storage", "volume", "list", "default", "--format",
                              "json"], capture_output=True, text=True, check=True).stdout
    assert [i for i in json.loads(listed) if i["name"] == vm.name] == []
    assert [v for v in json.loads(volumes) if v["name"] == vm.name] == []
    assert not vm.state.exists()
    assert vm.project.exists()


def test_create_twice_changes_nothing(writable):
    before = writable.incus_config()["config"]["volatile.uuid"]

    result = run_invoke("vm.create", "--name", writable.name, env=writable.env)

    assert "nothing to do" in result.stdout
    assert writable.incus_config()["config"]["volatile.uuid"] == before


def test_debian_12_image_gives_a_reachable_bookworm_container(fresh):
    need(image.present("corral/debian-12"),
         "no image corral/debian-12 (uv run invoke image.build --image debian-12)")
    vm = fresh(image="debian-12")

    version = vm.ssh("cat /etc/debian_version").stdout

    assert version.startswith("12.")
    assert vm.ssh("systemctl is-system-running").stdout.strip() == "running"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_only_listed_ports_reach_the_host_on_loopback(fresh):
    port = _free_port()
    # The guest's sshd is the one listener every container has.
    vm = fresh(mount="none", port_forwards=[{"guest": 22, "host": port}])

    proxies = {name: d for name, d in vm.incus_config()["expanded_devices"].items()
               if d["type"] == "proxy"}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        banner = conn.recv(64)

    assert proxies == {f"port-{port}": {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}",
                                        "connect": "tcp:127.0.0.1:22"}}
    assert banner.startswith(b"SSH-2.0-")


def test_a_container_without_port_forwards_has_no_proxy(writable):
    devices = writable.incus_config()["expanded_devices"]

    assert [name for name, d in devices.items() if d["type"] == "proxy"] == []
