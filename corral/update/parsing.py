"""Reading what apt, dpkg and npm print in a VM: planned upgrades, origins, versions, reboots."""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.update.report import Change


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
    """Installed packages and their versions from what :data:`.guest.DPKG_QUERY` prints.

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

