"""Incus system containers on Linux hosts, reached over SSH like Lima's VMs."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from corral import image, output, paths, process
from corral.config import VM, PortForward, size_bytes
from corral.errors import ProviderError
from corral.providers.base import BROKEN, CREATING, RUNNING, STOPPED, Machine, Provider

log = logging.getLogger(__name__)

#: The config key that marks a container as corral's; others are never touched.
MARK = "user.corral.managed"
#: The guest user's uid when the project's owner gives none (root, or a system user).
DEFAULT_UID = 1000
#: The project's disk device name in the container.
PROJECT_DEVICE = "project"
#: Seconds to wait for the container's address and for sshd to answer.
READY_TIMEOUT = 120

_STATES = {
    "Running": RUNNING,
    "Stopped": STOPPED,
    "Starting": CREATING,
    "Stopping": RUNNING,
    "Frozen": STOPPED,
    "Error": BROKEN,
}

_DAEMON_HINT = "start it: sudo uv run invoke host.setup --provider incus"

# Creates the login user (sudo without password, corral's key) and starts sshd. Runs as
# root in the guest through `incus exec`; a second run changes nothing but the key file.
BOOTSTRAP = r"""
set -eu
if ! id -u "$LOGIN" >/dev/null 2>&1; then
    if getent passwd "$WANT_UID" >/dev/null; then
        useradd --create-home --shell /bin/bash --user-group "$LOGIN"
    else
        useradd --create-home --shell /bin/bash --user-group --uid "$WANT_UID" "$LOGIN"
    fi
fi
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$LOGIN" > "/etc/sudoers.d/90-corral-$LOGIN"
chmod 0440 "/etc/sudoers.d/90-corral-$LOGIN"
home=$(getent passwd "$LOGIN" | cut -d: -f6)
install -d -m 0700 -o "$LOGIN" -g "$LOGIN" "$home/.ssh"
printf '%s\n' "$PUBKEY" > "$home/.ssh/authorized_keys"
chown "$LOGIN:$LOGIN" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
ssh-keygen -A >/dev/null
systemctl enable --quiet ssh.service
systemctl restart ssh.service
"""


def key_path() -> Path:
    """corral's SSH key for Incus guests: ``CONFIG_DIR/ssh/id_ed25519`` (made once)."""
    return paths.config_dir() / "ssh" / "id_ed25519"


def machine_dir(name: str) -> Path:
    """corral's files for container ``name``: ``STATE_DIR/incus/NAME``."""
    return paths.state_dir() / "incus" / name


def ssh_config_text(name: str, address: str, user: str, key: Path, known_hosts: Path) -> str:
    """The ssh.config of container ``name``, shaped like Lima's (``Host incus-NAME``).

    + address: the container's IPv4 address on the Incus bridge
    + user: the guest login user
    + key: corral's private key
    + known_hosts: the file holding the container's host keys (strict checking)
    """
    return "\n".join([
        f"# Written by corral for the Incus container {name}; rewritten on each vm.start.",
        f"Host incus-{name}",
        f"  HostName {address}",
        "  Port 22",
        f"  User {user}",
        f'  IdentityFile "{key}"',
        "  IdentitiesOnly yes",
        "  PreferredAuthentications publickey",
        f'  UserKnownHostsFile "{known_hosts}"',
        "  StrictHostKeyChecking yes",
        "  ForwardAgent no",
        "  ForwardX11 no",
        "  BatchMode yes",
        "  ConnectTimeout 10",
        "  LogLevel ERROR",
        "",
    ])


def known_hosts_text(name: str, address: str, host_keys: str) -> str:
    """known_hosts lines for the container's public host keys, under its alias and address.

    + host_keys: the guest's ``/etc/ssh/ssh_host_*.pub`` contents, one key a line
    """
    lines = []
    for line in host_keys.splitlines():
        words = line.split()
        if len(words) >= 2:
            lines.append(f"incus-{name},{address} {words[0]} {words[1]}")
    return "\n".join(lines) + "\n"


def parse_instances(text: str) -> tuple[list[Machine], set[str]]:
    """corral's machines and the names of every other container, from ``incus list`` JSON."""
    machines, foreign = [], set()
    for entry in json.loads(text or "[]"):
        name = entry["name"]
        if (entry.get("config") or {}).get(MARK) != "true":
            foreign.add(name)
            continue
        config = machine_dir(name) / "ssh.config"
        machines.append(Machine(
            name=name,
            provider="incus",
            status=_STATES.get(entry.get("status", ""), BROKEN),
            ssh_host=f"incus-{name}",
            ssh_config=config if config.exists() else None,
        ))
    return machines, foreign


def ipv4_address(state: dict, interface: str = "eth0") -> str | None:
    """The global IPv4 address of ``interface`` in an instance's state, if it has one yet."""
    network = (state.get("network") or {}).get(interface) or {}
    for address in network.get("addresses") or []:
        if address.get("family") == "inet" and address.get("scope") == "global":
            return address["address"]
    return None


def proxy_device(forward: PortForward) -> list[str]:
    """``incus config device add`` arguments for one ``port_forwards`` entry.

    >>> proxy_device(PortForward(guest=8000, host=18000))
    ['port-18000', 'proxy', 'listen=tcp:127.0.0.1:18000', 'connect=tcp:127.0.0.1:8000']
    """
    return [f"port-{forward.host}", "proxy", f"listen=tcp:{forward.host_ip}:{forward.host}",
            f"connect=tcp:127.0.0.1:{forward.guest}"]


def has_idmapped_mounts(server: dict) -> bool:
    """Whether the daemon's kernel can shift a shared folder's owners (``incus query /1.0``)."""
    features = (server.get("environment") or {}).get("kernel_features") or {}
    return features.get("idmapped_mounts") == "true"


def guest_uid(project_owner: int) -> int:
    """The guest login user's uid: the project's owner, so the shared folder is theirs.

    The project is shared with ``shift=true``, so guest and host see the same numeric
    owners. Owners below 1000 (root, system users) get 1000 instead.
    """
    return project_owner if project_owner >= DEFAULT_UID else DEFAULT_UID


class IncusProvider(Provider):
    """Incus system containers made from corral's images (``image.build``).

    Only containers carrying ``user.corral.managed=true`` are corral's; a container of the
    same name made otherwise is refused, never adopted, started, stopped or deleted.
    """

    name = "incus"
    tool = "incus"
    install_hint = "on a Debian or Ubuntu host run: sudo uv run invoke host.setup --provider incus"

    def create(self, vm: VM) -> bool:
        """Create ``vm``'s container, share the project, and make it reachable over SSH.

        + vm: a validated VM of the inventory

        A container that exists is started instead. If any step fails the new container
        and corral's files for it are removed, so nothing is left half-made.
        """
        self.require()
        existing = self.machine(vm.name)
        if existing:
            if existing.status != RUNNING:
                self.start(vm)
            return False
        alias = self._image(vm)
        if vm.settings.mount != "none":
            self._require_idmapped_mounts(vm)

        # The container: corral's mark, limits, and the project at its mount point.
        config = {
            MARK: "true",
            "user.corral.login": vm.login_user,
            "limits.cpu": str(vm.settings.cpus),
            "limits.memory": f"{size_bytes(vm.settings.memory) // 2**20}MiB",
        }
        # The root disk's size binds on pools with quotas (zfs, btrfs, lvm); "dir" ignores it.
        argv = ["init", alias, vm.name, "--device", f"root,size={vm.settings.disk}"]
        for key, value in config.items():
            argv += ["--config", f"{key}={value}"]
        self._incus(argv, what=f"creating {vm.name}")
        try:
            if vm.settings.mount != "none":
                self._incus(["config", "device", "add", vm.name, PROJECT_DEVICE, "disk",
                             f"source={vm.project}", f"path={vm.mount_point}", "shift=true",
                             f"readonly={'true' if vm.settings.mount == 'readonly' else 'false'}"],
                            what=f"sharing {vm.project}")

            # Each listed port: a proxy on the host side, into the guest's loopback.
            for forward in vm.settings.port_forwards:
                self._incus(["config", "device", "add", vm.name, *proxy_device(forward)],
                            what=f"forwarding port {forward.host}")
            self._incus(["start", vm.name], what=f"starting {vm.name}")
            self._bootstrap(vm)
        except BaseException:
            log.info("%s: creation failed, removing the container", vm.name)
            self._remove(vm.name)
            raise
        return True

    def start(self, vm: VM) -> None:
        """Start the container and rewrite its ssh.config (its address may have changed)."""
        self._own(vm.name)
        self._incus(["start", vm.name], what=f"starting {vm.name}")
        self._connect(vm)

    def stop(self, vm: VM) -> None:
        """Stop the container (its files stay for the next start)."""
        self._own(vm.name)
        stopped = self._incus(["stop", vm.name, "--timeout", "30"], check=False,
                              what=f"stopping {vm.name}")
        if stopped.returncode != 0:
            log.warning("%s: no clean shutdown within 30s, forcing it", vm.name)
            self._incus(["stop", vm.name, "--force"], what=f"stopping {vm.name}")

    def delete(self, vm: VM) -> None:
        """Delete the container, running or not, and corral's folder for it."""
        if self.machine(vm.name) is None:
            return
        self._remove(vm.name)

    def machines(self) -> list[Machine]:
        """corral's containers (``incus list --format json``)."""
        return parse_instances(self._list())[0]

    def machine(self, name: str) -> Machine | None:
        """The container ``name`` if corral made it; refuse one corral did not make."""
        machines, foreign = parse_instances(self._list())
        if name in foreign:
            raise ProviderError(
                f"{name}: an Incus container of that name exists but corral did not create it "
                f"(rename the VM in the inventory, or remove it yourself: incus delete {name})"
            )
        return next((m for m in machines if m.name == name), None)

    def shell(self, vm: VM, command: list[str] | None = None, workdir: str | None = None) -> int:
        """Run ``command`` (or a login shell) as the login user over SSH; return its status.

        + vm: a running VM
        + command: argv to run, e.g. ``["bash", "-lc", "make test"]``; None for a shell
        + workdir: guest folder to start in
        """
        remote = shlex.join(command) if command else "exec bash -l"
        if workdir:
            remote = f"cd {shlex.quote(workdir)} && {remote}"
        argv = ["ssh", "-F", str(self.ssh_config(vm.name))]
        if command is None and sys.stdin.isatty():
            argv.append("-t")
        argv += [self.ssh_host(vm.name), remote]
        log.debug("running %s", shlex.join(argv))
        return subprocess.run(argv, check=False).returncode

    def ssh_host(self, name: str) -> str:
        """The ``Host`` alias of container ``name``: ``incus-NAME``."""
        return f"incus-{name}"

    def ssh_config(self, name: str) -> Path:
        """``STATE_DIR/incus/NAME/ssh.config``."""
        return machine_dir(name) / "ssh.config"

    # Making the container reachable.

    def _bootstrap(self, vm: VM) -> None:
        """Trust ``ca_certs``, create the login user with corral's key, start sshd."""
        self._wait_booted(vm.name)

        # The extra CA files first: everything after may fetch through that proxy.
        if vm.ca_certs:
            for cert in vm.ca_certs:
                target = f"/usr/local/share/ca-certificates/corral-{cert.stem}.crt"
                self._incus(["file", "push", "--mode", "0644", str(cert), f"{vm.name}{target}"],
                            what=f"copying {cert} into {vm.name}")
            self._exec(vm.name, ["update-ca-certificates"], what="trusting ca_certs")

        # The login user, with sudo and corral's key, and sshd with fresh host keys.
        owner = vm.project.stat().st_uid if vm.settings.mount != "none" else os.getuid()
        self._exec(vm.name, ["sh", "-c", BOOTSTRAP], env={
            "LOGIN": vm.login_user,
            "WANT_UID": str(guest_uid(owner)),
            "PUBKEY": self._public_key(),
        }, what=f"creating user {vm.login_user}")
        self._connect(vm)

    def _connect(self, vm: VM) -> None:
        """Write ssh.config and known_hosts for the container's current address; wait for SSH."""
        address = self._wait_address(vm.name)
        host_keys = self._exec(vm.name, ["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"],
                               what="reading the host keys").stdout
        folder = machine_dir(vm.name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        known_hosts = folder / "known_hosts"
        known_hosts.write_text(known_hosts_text(vm.name, address, host_keys))
        login = self._config(vm.name).get("user.corral.login") or vm.login_user
        config = self.ssh_config(vm.name)
        config.write_text(ssh_config_text(vm.name, address, login, key_path(), known_hosts))
        self._wait_ssh(vm.name)

    def _wait_booted(self, name: str) -> None:
        # Poll: right after `incus start` systemd may not answer yet, and /tmp is mounted
        # late in boot (files written there before would be hidden by the tmpfs).
        deadline = time.monotonic() + READY_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            state = self._exec(name, ["systemctl", "is-system-running"], check=False,
                               timeout=30, what=f"waiting for {name} to boot").stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    log.warning("%s: booted with failed units (systemctl --failed)", name)
                return
            time.sleep(0.3)
        raise ProviderError(f"{name}: still booting after {READY_TIMEOUT}s (state {state!r}; "
                            f"look inside: incus exec {name} -- systemctl --failed)")

    def _wait_address(self, name: str) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            state = json.loads(self._incus(["query", f"/1.0/instances/{name}/state"],
                                           what=f"reading the state of {name}").stdout)
            address = ipv4_address(state)
            if address:
                return address
            if time.monotonic() > deadline:
                raise ProviderError(f"{name}: no IPv4 address on eth0 after {READY_TIMEOUT}s "
                                    "(check the bridge: incus network show incusbr0)")
            time.sleep(0.5)

    def _wait_ssh(self, name: str) -> None:
        argv = ["ssh", "-F", str(self.ssh_config(name)), "-o", "ConnectTimeout=5",
                self.ssh_host(name), "true"]
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            result = process.run(argv, check=False, timeout=30)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ProviderError(f"{name}: SSH does not answer after {READY_TIMEOUT}s: "
                                    f"{process.last_line(result.stderr)}")
            time.sleep(0.5)

    @staticmethod
    def _public_key() -> str:
        """corral's public key, generating the pair the first time."""
        key = key_path()
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "corral",
                         "-f", str(key)], what="generating corral's SSH key")
            output.say(f"generated corral's SSH key {key}")
        return key.with_suffix(".pub").read_text().strip()

    # Talking to incus.

    def _image(self, vm: VM) -> str:
        """The local image alias for ``vm.settings.image``; one clear line when missing."""
        wanted = f"corral/{vm.settings.image}"
        result = self._incus(["image", "alias", "list", "--format", "json"],
                             what="listing images")
        if any(entry.get("name") == wanted for entry in json.loads(result.stdout or "[]")):
            return wanted
        if vm.settings.image in image.IMAGES:
            hint = f"build it: sudo uv run invoke image.build --image {vm.settings.image}"
        else:
            hint = ("image.build makes Debian images only: import an image with systemd, "
                    f"openssh-server and sudo as {wanted}, or choose a debian-* image")
        raise ProviderError(f"{vm.name}: image: Incus has no image {wanted} ({hint})")

    def _require_idmapped_mounts(self, vm: VM) -> None:
        """Refuse to share the project when the kernel cannot shift its owners."""
        server = json.loads(self._incus(["query", "/1.0"], what="asking Incus").stdout)
        if not has_idmapped_mounts(server):
            raise ProviderError(
                f"{vm.name}: mount: this kernel has no idmapped mounts, so the project "
                "cannot be shared with its owners intact (use Linux 5.12 or later, "
                "or set mount: none)"
            )

    def _own(self, name: str) -> None:
        if self.machine(name) is None:
            raise ProviderError(f"{name}: no Incus container of corral's by that name "
                                f"(create it: uv run invoke vm.create --name {name})")

    def _config(self, name: str) -> dict:
        result = self._incus(["query", f"/1.0/instances/{name}"], what=f"reading {name}")
        return json.loads(result.stdout).get("config") or {}

    def _remove(self, name: str) -> None:
        self._incus(["delete", "--force", name], what=f"deleting {name}", check=False)
        shutil.rmtree(machine_dir(name), ignore_errors=True)

    def _list(self) -> str:
        return self._incus(["list", "--format", "json"], what="listing Incus containers").stdout

    def _exec(self, name: str, argv: list[str], *, what: str, env: dict | None = None,
              check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        args = ["exec", name]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return self._incus([*args, "--", *argv], what=what, check=check, timeout=timeout)

    def _incus(self, args: list[str], *, what: str, check: bool = True,
               timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``incus ARGS``; a daemon that does not answer becomes one line with the fix."""
        self.require()
        result = process.run([self.tool, *args], check=False, timeout=timeout, what=what)
        if check and result.returncode != 0:
            reason = process.last_line(result.stderr)
            if "daemon doesn't appear to be started" in reason or "unix.socket" in reason:
                raise ProviderError(f"incus: the Incus daemon does not answer ({_DAEMON_HINT})")
            raise ProviderError(f"{what}: {reason}")
        return result
