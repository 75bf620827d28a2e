"""Host preparation: what a provider needs installed and running on this machine."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral import output, process
from corral.errors import HostError

log = logging.getLogger(__name__)

INCUSD = "/usr/libexec/incus/incusd"
INCUSD_LOG = Path("/var/log/incus/corral-incusd.log")
APT_SOURCES = Path("/etc/apt")
BACKPORTS_FILE = "corral-backports.list"

#: Incus objects host.setup ensures: the storage pool, the bridge and its profile devices.
STORAGE_POOL = "default"
BRIDGE = "incusbr0"
#: Subnets tried in order for the bridge; the first that overlaps nothing on the host wins.
BRIDGE_SUBNETS = ("10.77.0.0/24", "10.78.0.0/24", "10.179.0.0/24", "172.30.77.0/24")

LIMA_HINT = "install Lima: brew install lima (https://lima-vm.io/docs/installation/)"


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of the host's apt sources (one per URI in deb822 files)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def setup(provider: str | None = None) -> None:
    """Install and start what ``provider`` needs on this host, saying what it did.

    + provider: ``incus`` or ``lima``; None takes the inventory's, else the platform's
    """
    provider = provider or _default_provider()
    if provider == "lima":
        _check_lima()
    elif provider == "incus":
        setup_incus()
    else:
        raise HostError(f"host.setup: --provider {provider!r} is not one of: lima, incus")


def setup_incus() -> None:
    """Ensure the incus package, a running daemon, a storage pool, a NAT bridge and profile."""
    _require_linux_root()

    # The package, from bookworm-backports on Debian 12.
    install_incus_package()

    # The daemon: the service under systemd, else incusd in the background.
    ensure_daemon()

    # Storage, network and the default profile that uses them.
    ensure_storage()
    ensure_bridge()
    ensure_profile()


def _default_provider() -> str:
    try:
        from corral.config import load_inventory

        choices = {vm.settings.provider for vm in load_inventory().vms.values()}
    except Exception:  # noqa: BLE001 - any broken inventory: fall back to the platform
        choices = set()
    choices.discard("auto")
    if len(choices) == 1:
        return choices.pop()
    return "lima" if platform.system() == "Darwin" else "incus"


def _check_lima() -> None:
    if shutil.which("limactl"):
        output.mark("ok", "limactl found on PATH, nothing to do")
        return
    output.mark("fail", "limactl not found on PATH", LIMA_HINT)
    raise HostError(f"host.setup: limactl not found on PATH: {LIMA_HINT}")


def _require_linux_root() -> None:
    if platform.system() != "Linux":
        raise HostError("host.setup --provider incus: Incus runs on Linux hosts only "
                        "(on macOS use --provider lima)")
    if os.geteuid() != 0:
        raise HostError("host.setup --provider incus: needs root to install and start Incus "
                        "(run: sudo uv run invoke host.setup --provider incus)")
    release = os_release()
    if release.get("ID") not in ("debian", "ubuntu"):
        raise HostError(f"host.setup --provider incus: {release.get('PRETTY_NAME', 'this host')} "
                        "is not Debian or Ubuntu (install Incus by hand, then run it again)")


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """The key=value pairs of ``/etc/os-release``, quotes removed."""
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


# --- the incus package --------------------------------------------------------------------


def install_incus_package() -> None:
    """Install incus (bookworm-backports on Debian 12), dnsmasq-base and debootstrap."""
    wanted = {"incus": [], "dnsmasq-base": [], "debootstrap": []}
    release = os_release()
    if release.get("ID") == "debian" and release.get("VERSION_CODENAME") == "bookworm":
        wanted["incus"] = ["-t", "bookworm-backports"]
    missing = [name for name in wanted if not _package_installed(name)]
    if not missing:
        output.mark("ok", f"packages {', '.join(wanted)} installed, nothing to do")
        return
    if wanted["incus"] and "incus" in missing:
        ensure_backports("bookworm")
    _apt(["update"])
    for name in missing:
        _apt(["install", "-y", "--no-install-recommends", *wanted[name], name])
        output.mark("ok", f"package {name} installed")


def ensure_backports(codename: str, apt_dir: Path | None = None) -> None:
    """Add ``CODENAME-backports`` on the mirror the host already uses (nothing if present).

    + apt_dir: apt's configuration folder (default ``/etc/apt``)
    """
    apt_dir = apt_dir or APT_SOURCES
    sources = host_sources(apt_dir)
    wanted = f"{codename}-backports"
    if any(wanted in s.suites for s in sources):
        output.mark("ok", f"apt source {wanted} present, nothing to do")
        return
    mirror = debian_mirror(sources, codename)
    if mirror is None:
        raise HostError(f"{apt_dir}: no Debian mirror for {codename} in the apt sources "
                        f"(add one, or add {wanted} by hand)")
    target = apt_dir / "sources.list.d" / BACKPORTS_FILE
    target.write_text(backports_line(mirror, codename))
    output.mark("ok", f"apt source {wanted} added from {mirror.uri} ({target})")


def backports_line(mirror: AptSource, codename: str) -> str:
    """The one-line apt source for ``CODENAME-backports`` on ``mirror``'s URI.

    >>> backports_line(AptSource("http://mirror/debian", ("bookworm",), ("main",)), "bookworm")
    'deb http://mirror/debian bookworm-backports main\\n'
    """
    options = f"[signed-by={mirror.signed_by}] " if mirror.signed_by else ""
    return f"deb {options}{mirror.uri} {codename}-backports main\n"


def host_sources(apt_dir: Path | None = None) -> list[AptSource]:
    """Every ``deb`` entry in ``sources.list`` and ``sources.list.d`` (.list and .sources)."""
    apt_dir = apt_dir or APT_SOURCES
    files = [apt_dir / "sources.list"]
    folder = apt_dir / "sources.list.d"
    if folder.is_dir():
        files += sorted(folder.iterdir())
    sources: list[AptSource] = []
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".list":
            sources += parse_list(path.read_text())
        elif path.suffix == ".sources":
            sources += parse_deb822(path.read_text())
    return sources


def parse_list(text: str) -> list[AptSource]:
    """The ``deb`` lines of a one-line-style apt sources file.

    >>> parse_list("deb [arch=amd64] http://m/debian bookworm main contrib")[0].suites
    ('bookworm',)
    """
    sources = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed_by = None
        if words and words[0].startswith("["):
            options = []
            while words:
                word = words.pop(0)
                options.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            for option in options:
                key, _, value = option.partition("=")
                if key == "signed-by":
                    signed_by = value
        if len(words) >= 2:
            sources.append(AptSource(words[0], (words[1],), tuple(words[2:]), signed_by))
    return sources


def parse_deb822(text: str) -> list[AptSource]:
    """The enabled ``deb`` stanzas of a deb822 ``.sources`` file, one entry per URI."""
    sources = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        signed_by = stanza.get("signed-by")
        if signed_by and "\n" in signed_by:
            signed_by = None  # an inline key block; a derived line cannot refer to it
        for uri in stanza.get("uris", "").split():
            sources.append(AptSource(uri, suites, components, signed_by))
    return sources


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def debian_mirror(sources: list[AptSource], codename: str | None = None) -> AptSource | None:
    """The host's Debian archive mirror: a ``main`` source that is not the security archive.

    + codename: prefer an entry for this suite (``bookworm``)
    """
    candidates = [s for s in sources if "main" in s.components
                  and not any(suite.endswith("-security") or "/" in suite for suite in s.suites)]
    for source in candidates:
        if codename and codename in source.suites:
            return source
    return None if codename else (candidates[0] if candidates else None)


def security_mirror(sources: list[AptSource]) -> AptSource | None:
    """The host's Debian security archive source, if it has one."""
    return next((s for s in sources if any(suite.endswith("-security") for suite in s.suites)
                 and "main" in s.components), None)


def _package_installed(name: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0 and "install ok installed" in result.stdout


def _apt(args: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "-q", *args]
    log.debug("running %s", argv)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HostError(f"apt-get {' '.join(args)}: {process.last_line(result.stderr)}")


# --- the daemon and its objects -----------------------------------------------------------


def daemon_answers(timeout: float = 10) -> bool:
    """True when the Incus daemon answers on its socket."""
    try:
        result = subprocess.run(["incus", "query", "/1.0"], capture_output=True,
                                text=True, timeout=timeout, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def systemd_is_init() -> bool:
    """True when systemd runs as PID 1 (then Incus runs as its service)."""
    return Path("/run/systemd/system").is_dir()


def ensure_daemon() -> None:
    """Start the Incus daemon unless it already answers."""
    if daemon_answers():
        output.mark("ok", "Incus daemon answers, nothing to do")
        return
    if systemd_is_init():
        process.run(["systemctl", "enable", "--now", "incus.socket", "incus.service"],
                    what="starting the incus service")
        how = "as the incus service"
    else:
        INCUSD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with INCUSD_LOG.open("ab") as logfile:
            subprocess.Popen([INCUSD, "--group", "root"], stdin=subprocess.DEVNULL,
                             stdout=logfile, stderr=logfile, start_new_session=True)
        how = f"in the background (log: {INCUSD_LOG})"
    process.run(["incus", "admin", "waitready", "--timeout", "60"], timeout=90,
                what="waiting for the Incus daemon")
    output.mark("ok", f"Incus daemon started {how}")


def ensure_storage() -> None:
    """Ensure the ``default`` storage pool (driver ``dir``)."""
    if _exists(["storage", "show", STORAGE_POOL]):
        output.mark("ok", f"storage pool {STORAGE_POOL} present, nothing to do")
        return
    process.run(["incus", "storage", "create", STORAGE_POOL, "dir"],
                what=f"creating storage pool {STORAGE_POOL}")
    output.mark("ok", f"storage pool {STORAGE_POOL} created (dir)")


def ensure_bridge() -> None:
    """Ensure the NAT bridge ``incusbr0`` on a private subnet no host route uses."""
    if _exists(["network", "show", BRIDGE]):
        output.mark("ok", f"network {BRIDGE} present, nothing to do")
        return
    subnet = free_subnet(_host_networks())
    gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
    process.run(["incus", "network", "create", BRIDGE, f"ipv4.address={gateway}",
                 "ipv4.nat=true", "ipv6.address=none"], what=f"creating network {BRIDGE}")
    output.mark("ok", f"network {BRIDGE} created ({gateway}, NAT)")


def free_subnet(used: list[ipaddress.IPv4Network],
                candidates: tuple[str, ...] = BRIDGE_SUBNETS) -> ipaddress.IPv4Network:
    """The first candidate subnet that overlaps none of ``used``.

    >>> str(free_subnet([ipaddress.ip_network("10.77.0.0/16")]))
    '10.78.0.0/24'
    """
    for text in candidates:
        subnet = ipaddress.ip_network(text)
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise HostError(f"host.setup: every candidate bridge subnet ({', '.join(candidates)}) is in "
                    f"use on this host (create {BRIDGE} by hand: incus network create)")


def _host_networks() -> list[ipaddress.IPv4Network]:
    result = process.run(["ip", "-j", "-4", "route", "show", "table", "all"], check=False)
    networks = []
    for route in json.loads(result.stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or ":" in dst:
            continue
        try:
            networks.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    return networks


def ensure_profile() -> None:
    """Ensure the default profile has a root disk on the pool and a nic on the bridge."""
    profile = json.loads(process.run(["incus", "query", "/1.0/profiles/default"]).stdout)
    devices = profile.get("devices") or {}
    added = []
    if "root" not in devices:
        process.run(["incus", "profile", "device", "add", "default", "root", "disk",
                     "path=/", f"pool={STORAGE_POOL}"], what="adding the root disk")
        added.append(f"root disk on {STORAGE_POOL}")
    if "eth0" not in devices:
        process.run(["incus", "profile", "device", "add", "default", "eth0", "nic",
                     f"network={BRIDGE}", "name=eth0"], what="adding the nic")
        added.append(f"eth0 on {BRIDGE}")
    if added:
        output.mark("ok", f"default profile: added {', '.join(added)}")
    else:
        output.mark("ok", "default profile has root disk and nic, nothing to do")


def _exists(args: list[str]) -> bool:
    return process.run(["incus", *args], check=False).returncode == 0

