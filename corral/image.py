"""Local Incus system images built with debootstrap, for hosts without the image server."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from corral import hostsetup, output, process
from corral.errors import HostError, ProviderError

log = logging.getLogger(__name__)

#: debootstrap's downloads and the build folder; survives between runs on one machine.
CACHE_DIR = Path(os.environ.get("CORRAL_CACHE_DIR") or "/var/cache/corral")
#: The Incus alias prefix of corral's images (``corral/debian-13``).
ALIAS_PREFIX = "corral/"


@dataclass(frozen=True)
class ImageSpec:
    """What a buildable image is made of."""

    name: str
    suite: str
    version: str
    #: The DHCP client ifupdown calls for ``iface eth0 inet dhcp``.
    dhcp_client: str

    @property
    def packages(self) -> list[str]:
        """Packages on top of debootstrap's minbase."""
        return ["systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "sudo",
                "ca-certificates", "ifupdown", "iproute2", self.dhcp_client]


IMAGES = {
    "debian-13": ImageSpec("debian-13", "trixie", "13", "dhcpcd-base"),
    "debian-12": ImageSpec("debian-12", "bookworm", "12", "isc-dhcp-client"),
}

INTERFACES = """\
# Written by corral's image.build: eth0 comes up with DHCP from the Incus bridge.
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp

source /etc/network/interfaces.d/*
"""

# Host keys are made on the container's first boot, never shipped in the image.
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate SSH host keys missing on this machine (corral)
Before=ssh.service ssh.socket
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

#: Kernel-module loading is the host's business; in a container the unit only fails.
MASKED_UNITS = ("systemd-modules-load.service",)

HOSTNAME_TEMPLATE = "{{ container.name }}\n"
HOSTS_TEMPLATE = """\
127.0.0.1 localhost
127.0.1.1 {{ container.name }}
::1 localhost ip6-localhost ip6-loopback
"""


def alias(image: str) -> str:
    """The Incus alias of a corral image: ``corral/debian-13``."""
    return f"{ALIAS_PREFIX}{image}"


def spec(image: str) -> ImageSpec:
    """The build definition of ``image``; one clear line when corral cannot build it."""
    try:
        return IMAGES[image]
    except KeyError:
        raise HostError(f"image.build: --image {image!r} cannot be built here "
                        f"(choose one of: {', '.join(IMAGES)})") from None


def present(name: str) -> bool:
    """True when the Incus image alias ``name`` (``corral/debian-13``) exists."""
    result = process.run(["incus", "image", "alias", "list", "--format", "json"], check=False)
    if result.returncode != 0:
        return False
    return any(entry.get("name") == name for entry in yaml.safe_load(result.stdout))


def build(image: str = "debian-13", *, rebuild: bool = False, name: str | None = None,
          cache_dir: Path | None = None) -> str:
    """Build ``image`` with debootstrap and import it into Incus; return its alias.

    + image: ``debian-13`` or ``debian-12``
    + rebuild: build and import again even when the alias exists
    + name: the alias to import as (default ``corral/IMAGE``; the benchmark uses another)
    + cache_dir: debootstrap's cache and build folder (default ``/var/cache/corral``)

    Reuses the imported image when present. debootstrap's downloads stay cached in
    ``/var/cache/corral/debootstrap`` so a rebuild needs no network.
    """
    definition = spec(image)
    _require_host()
    name = name or alias(image)
    cache = cache_dir or CACHE_DIR
    if present(name) and not rebuild:
        output.mark("ok", f"image {name} present, nothing to do (--rebuild to build again)")
        return name

    # Where the host's apt gets Debian from: the guest uses the same mirror.
    sources = hostsetup.host_sources()
    release = hostsetup.os_release()
    codename = release.get("VERSION_CODENAME") if release.get("ID") == "debian" else None
    mirror = os.environ.get("CORRAL_DEBIAN_MIRROR") or (
        _uri(hostsetup.debian_mirror(sources, codename)) if codename else None)
    if not mirror:
        raise HostError("image.build: no Debian mirror in this host's apt sources "
                        "(set CORRAL_DEBIAN_MIRROR to a Debian archive URL)")
    security = _uri(hostsetup.security_mirror(sources))

    started = time.monotonic()
    (cache / "build").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{image}-", dir=cache / "build"))
    try:
        # debootstrap from the cached packages (downloaded once per suite and architecture).
        tarball = _package_cache(definition, mirror, cache)
        rootfs = work / "rootfs"
        output.say(f"image {name}: debootstrap {definition.suite} (minbase) from {mirror}")
        _debootstrap(["--unpack-tarball", str(tarball), definition.suite, str(rootfs), mirror],
                     definition)

        # Configure the tree: network, apt sources, host keys and machine-id left to boot.
        customise(rootfs, definition, mirror, security)

        # Pack metadata, templates and tree as one unified image and import it.
        write_metadata(work, definition)
        archive = work / "image.tar"
        process.run(["tar", "-C", str(work), "--numeric-owner", "--xattrs", "-cf", str(archive),
                     "metadata.yaml", "templates", "rootfs"], what="packing the image")
        # Import under a temporary alias, then swap: the old image serves until the end.
        fresh = f"{name}.new"
        if present(fresh):
            process.run(["incus", "image", "delete", fresh], what=f"removing a stale {fresh}")
        process.run(["incus", "image", "import", str(archive), "--alias", fresh],
                    timeout=900, what=f"importing {name}")
        if present(name):
            process.run(["incus", "image", "delete", name], what=f"removing the old {name}")
        process.run(["incus", "image", "alias", "rename", fresh, name],
                    what=f"naming the image {name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output.mark("ok", f"image {name} built and imported in {time.monotonic() - started:.0f}s")
    return name


def _uri(source: hostsetup.AptSource | None) -> str | None:
    return source.uri.rstrip("/") if source else None


def _require_host() -> None:
    if platform.system() != "Linux":
        raise HostError("image.build: builds Incus images on Linux hosts only")
    if os.geteuid() != 0:
        raise HostError("image.build: needs root for debootstrap "
                        "(run: sudo uv run invoke image.build)")
    if not shutil.which("debootstrap"):
        raise HostError("image.build: debootstrap not found (install it: apt-get install "
                        "debootstrap)")
    if not hostsetup.daemon_answers():
        raise ProviderError("image.build: the Incus daemon does not answer "
                            "(start it: sudo uv run invoke host.setup --provider incus)")


def _package_cache(definition: ImageSpec, mirror: str, cache: Path) -> Path:
    """The debootstrap tarball of ``definition``'s packages, downloading it the first time."""
    arch = _dpkg_arch()
    folder = cache / "debootstrap"
    tarball = folder / f"{definition.suite}-{arch}-{_digest(definition.packages)}.tgz"
    if tarball.exists():
        output.say(f"image {definition.name}: packages cached in {tarball}")
        return tarball
    folder.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tgz")
    output.say(f"image {definition.name}: downloading packages into {tarball}")
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        _debootstrap([f"--make-tarball={partial}", definition.suite, scratch, mirror],
                     definition)
    partial.replace(tarball)
    return tarball


def _debootstrap(args: list[str], definition: ImageSpec) -> None:
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(definition.packages)}",
            "--components=main", *args]
    log.debug("running %s", argv)
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stdout.splitlines() if line.startswith("E:")]
        reason = lines[-1] if lines else process.last_line(result.stderr or result.stdout)
        raise HostError(f"image.build: debootstrap {definition.suite} failed: {reason}")


def _dpkg_arch() -> str:
    return process.run(["dpkg", "--print-architecture"]).stdout.strip()


def _digest(words: list[str]) -> str:
    return hashlib.sha256(" ".join(sorted(words)).encode()).hexdigest()[:8]


def apt_sources(definition: ImageSpec, mirror: str, security: str | None) -> str:
    """The guest's deb822 apt sources: the host's mirror, plus security when the host has one.

    >>> print(apt_sources(IMAGES["debian-12"], "http://m/debian", None), end="")
    Types: deb
    URIs: http://m/debian
    Suites: bookworm bookworm-updates
    Components: main
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
    """
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    text = (f"Types: deb\nURIs: {mirror}\nSuites: {definition.suite} {definition.suite}-updates\n"
            f"Components: main\nSigned-By: {keyring}\n")
    if security:
        text += (f"\nTypes: deb\nURIs: {security}\nSuites: {definition.suite}-security\n"
                 f"Components: main\nSigned-By: {keyring}\n")
    return text


def customise(rootfs: Path, definition: ImageSpec, mirror: str, security: str | None) -> None:
    """Turn a debootstrap tree into a container image corral can reach over SSH."""

    # Network: eth0 with DHCP (hotplug does not fire in a container, so 'auto', not 'allow').
    (rootfs / "etc/network/interfaces").write_text(INTERFACES)

    # apt: deb822 sources on the host's mirror, no leftover package files.
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        apt_sources(definition, mirror, security))
    for leftover in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    for listing in (rootfs / "var/lib/apt/lists").glob("*_*"):
        listing.unlink()

    # SSH host keys and the machine id must be unique per container: made at first boot.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    units = rootfs / "etc/systemd/system"
    (units / "corral-ssh-hostkeys.service").write_text(HOSTKEYS_UNIT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "corral-ssh-hostkeys.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/systemd/system/corral-ssh-hostkeys.service")
    (rootfs / "etc/machine-id").write_text("")

    # Units that cannot work in a container would leave every boot "degraded".
    for unit in MASKED_UNITS:
        mask = units / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)


def metadata(definition: ImageSpec, arch: str, created: int) -> dict:
    """The image's ``metadata.yaml`` for Incus: architecture, description and templates.

    + arch: the kernel's machine name (``x86_64``)
    + created: the creation time, seconds since the epoch
    """
    return {
        "architecture": arch,
        "creation_date": created,
        "properties": {
            "os": "debian",
            "release": definition.suite,
            "version": definition.version,
            "variant": "corral",
            "description": f"Debian {definition.version} ({definition.suite}), built by corral",
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }


def write_metadata(work: Path, definition: ImageSpec) -> None:
    """Write ``metadata.yaml`` and the templates it names into ``work``."""
    meta = metadata(definition, platform.machine(), int(time.time()))
    (work / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    templates = work / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "hostname.tpl").write_text(HOSTNAME_TEMPLATE)
    (templates / "hosts.tpl").write_text(HOSTS_TEMPLATE)
