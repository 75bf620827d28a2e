"""Pieces the roles share: one probe of the guest, pinned downloads and keyrings."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.exceptions import DeployError

KEYRINGS = "/etc/apt/keyrings"
CACHE = "/var/cache/corral"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

class RoleError(DeployError):
    """A role cannot do its work as configured; the message names the key to fix."""


# Debian architecture -> the names upstreams give it in their downloads.
UPSTREAM_ARCH = {
    "amd64": {"go": "amd64", "rust": "x86_64-unknown-linux-gnu", "opencode": "x64"},
    "arm64": {"go": "arm64", "rust": "aarch64-unknown-linux-gnu", "opencode": "arm64"},
}

# Everything the roles need to know about a guest, asked in one round trip: each line
# is key=value. Keyring lines list the primary-key fingerprints the file holds; file:,
# link: and dir: lines report the paths the roles manage ("~/" is the agent's home).
_PROBE = r"""
user={user}
home=$(getent passwd "$user" | cut -d: -f6)
. /etc/os-release
echo "distro_id=$ID"
echo "distro_version=$VERSION_ID"
echo "distro_codename=${{VERSION_CODENAME:-}}"
echo "arch=$(dpkg --print-architecture)"
echo "agent_home=$home"
echo "agent_shell=$(getent passwd "$user" | cut -d: -f7)"
fingerprints() {{
  [ -s "$1" ] && command -v gpg >/dev/null || return 0
  g=$(mktemp -d)
  GNUPGHOME=$g gpg --batch --show-keys --with-colons "$1" 2>/dev/null \
    | awk -F: '$1=="pub"{{p=1;next}} $1=="fpr"&&p{{printf "%s,",$10}} {{p=0}}'
  rm -rf "$g"
}}
echo "keyring_gh=$(fingerprints {keyrings}/githubcli-archive-keyring.gpg)"
echo "keyring_nodesource=$(fingerprints {keyrings}/nodesource.gpg)"
echo "go=$(head -n1 /usr/local/go/VERSION 2>/dev/null)"
echo "uv=$(/opt/corral/uv/bin/uv --version 2>/dev/null | cut -d' ' -f2)"
echo "opencode_npm=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
  /usr/local/lib/node_modules/opencode-ai/package.json 2>/dev/null | head -n1)"
echo "opencode_release=$(cat /usr/local/lib/opencode/VERSION 2>/dev/null)"
echo "rustup=$([ -x "$home/.cargo/bin/rustup" ] && echo yes)"
echo "rust_toolchains=$(ls "$home/.rustup/toolchains" 2>/dev/null | tr '\n' ',')"
echo "needrestart=$([ -d /etc/needrestart ] && echo yes)"
stamp=/var/lib/apt/periodic/update-success-stamp
echo "apt_age=$([ -f $stamp ] && echo $(( $(date +%s) - $(stat -c %Y $stamp) )))"
at() {{ case $1 in "~/"*) printf '%s/%s' "$home" "${{1#??}}" ;; *) printf '%s' "$1" ;; esac; }}
for spec in {files}; do p=$(at "$spec")
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    echo "file:$spec=$(sha256sum "$p" | cut -d' ' -f1) $(stat -c '%a %U' "$p")"
  else echo "file:$spec="; fi
done
for spec in {links}; do echo "link:$spec=$(readlink "$(at "$spec")")"; done
for spec in {dirs}; do p=$(at "$spec")
  if [ -d "$p" ]; then echo "dir:$spec=$(stat -c '%a %U' "$p")"; else echo "dir:$spec="; fi
done
"""


class Probe(FactBase):
    """The guest as the roles see it: distribution, architecture, installed pins, and
    the sha256, mode and owner of each managed path.

    Returns a dict of strings; keyring fingerprints and toolchains as lists; ``files``,
    ``links`` and ``dirs`` as dicts keyed by the path as the roles name it.
    """

    def command(self, user: str, files: tuple = (), links: tuple = (), dirs: tuple = ()) -> str:
        def words(paths):
            return " ".join(shlex.quote(p) for p in paths) or "''"

        return _PROBE.format(user=shlex.quote(user), keyrings=KEYRINGS, files=words(files),
                             links=words(links), dirs=words(dirs))

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_probe(output)


def parse_probe(lines: list[str]) -> dict[str, Any]:
    """The probe's ``key=value`` lines as a dict; comma lists become lists."""
    found: dict[str, Any] = {"files": {}, "links": {}, "dirs": {}}
    for line in lines:
        key, _, value = line.partition("=")
        kind, _, path = key.partition(":")
        if path and kind in ("file", "dir"):
            if path not in ("''", ""):
                found[kind + "s"][path] = tuple(value.split()) or None
        elif path and kind == "link":
            if path not in ("''", ""):
                found["links"][path] = value or None
        elif key.startswith("keyring_") or key == "rust_toolchains":
            found[key] = [item for item in value.split(",") if item]
        else:
            found[key] = value.strip()
    return found


def managed_paths(data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Every path a role manages, from each role module's ``probed_paths(data)``."""
    from importlib import import_module

    from deploy.roles import ROLE_NAMES

    paths: dict[str, list[str]] = {"files": [], "links": [], "dirs": []}
    for role in ROLE_NAMES:
        module = import_module(f"deploy.roles.{role}")
        if hasattr(module, "probed_paths"):
            for kind, items in module.probed_paths(data).items():
                paths[kind] += items
    return {kind: tuple(dict.fromkeys(items)) for kind, items in paths.items()}


# One probe per host and run: pyinfra 3 does not cache facts, and every role decides from
# the state the guest was in when the run began.
_PROBED: dict[str, dict[str, Any]] = {}


def probe() -> dict[str, Any]:
    """The :class:`Probe` of the current host, plus its installed ``packages``.

    Gathered once per run and host, when the first role asks.
    """
    if host.name not in _PROBED:
        from pyinfra.facts.deb import DebPackages

        data = host.data.dict()
        found = host.get_fact(Probe, user=data.get("agent_user") or "root",
                              **managed_paths(data))
        found["packages"] = set(host.get_fact(DebPackages) or {})
        _PROBED[host.name] = found
    return _PROBED[host.name]


def upstream_arch(arch: str, tool: str) -> str:
    """The architecture name ``tool`` uses in its downloads (``amd64`` -> ``x64``)."""
    if arch not in UPSTREAM_ARCH:
        raise RoleError(f"{arch}: architecture not supported (amd64, arm64)")
    return UPSTREAM_ARCH[arch][tool]


def pinned_sha256(sums: dict[str, str] | None, arch: str, key: str) -> str:
    """The pinned sha256 for ``arch`` from a ``{arch: sum}`` pin, or a clear error."""
    value = (sums or {}).get(arch) or ""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise RoleError(
            f"{key}.{arch}: no sha256 pinned (set it in inventory/versions.yaml; "
            "refusing an unchecked download)"
        )
    return value.lower()


def download_script(url: str, dest: str, sha256: str, cache: str = CACHE) -> str:
    """Shell that downloads ``url`` to ``dest`` only if its sha256 is the pinned one.

    A download with another sum is deleted and the script fails, naming both sums.
    """
    q = shlex.quote
    return (
        f"set -e; mkdir -p {q(cache)}; tmp=$(mktemp {q(cache)}/download.XXXXXX); "
        f"curl -fsSL --retry 3 -o \"$tmp\" {q(url)}; "
        f"got=$(sha256sum \"$tmp\" | cut -d' ' -f1); "
        f"if [ \"$got\" != {q(sha256)} ]; then rm -f \"$tmp\"; "
        f"echo \"corral: {url} has sha256 $got, expected the pinned {sha256}; "
        f"nothing installed\" >&2; exit 1; fi; "
        f"chmod 0644 \"$tmp\"; mv \"$tmp\" {q(dest)}"
    )


def keyring_script(url: str, fingerprint: str, dest: str, keyrings: str = KEYRINGS) -> str:
    """Shell that installs the key at ``url`` as keyring ``dest`` if it has ``fingerprint``.

    Only the pinned key is exported into the keyring, whatever else the file holds; a
    file without it fails the script and leaves no keyring behind.
    """
    q = shlex.quote
    fpr = fingerprint.replace(" ", "").upper()
    return (
        f"set -e; install -d -m 0755 {q(keyrings)}; g=$(mktemp -d); "
        f"trap 'rm -rf \"$g\"' EXIT; "
        f"curl -fsSL --retry 3 -o \"$g/key\" {q(url)}; "
        f"GNUPGHOME=$g gpg --batch --quiet --import \"$g/key\" 2>/dev/null || true; "
        f"if ! GNUPGHOME=$g gpg --batch --list-keys --with-colons {fpr} >/dev/null 2>&1; then "
        f"echo \"corral: {url} does not hold the key with the pinned fingerprint {fpr} "
        f"(it holds: $(GNUPGHOME=$g gpg --batch --show-keys --with-colons \"$g/key\" "
        f"2>/dev/null | awk -F: '$1==\"fpr\"{{printf \"%s \",$10}}')); nothing installed\" >&2; "
        f"exit 1; fi; "
        f"GNUPGHOME=$g gpg --batch --export {fpr} > \"$g/keyring\"; "
        f"install -m 0644 \"$g/keyring\" {q(dest)}"
    )


@operation(is_idempotent=True)
def converge(commands: list[str], done: bool, state: str):
    """Run ``commands`` unless the probe says the guest is already in the wanted state.

    + commands: shell commands that bring the guest to the state
    + done: whether the guest is there already (decided from facts)
    + state: the wanted state in words, for the "nothing to do" line
    """
    if done:
        host.noop(f"{state}: nothing to do")
        return
    for command in commands:
        yield StringCommand(command)


@operation(is_idempotent=True)
def note(message: str):
    """Say something in the run's output without changing the guest."""
    host.noop(message)
    return
    yield


def pinned_apt_repository(label: str, *, key_url: str, fingerprint: str, keyring: str,
                          source: str, list_file: str, present_keys: list[str]) -> list:
    """Add an apt repository whose keyring holds only the key with a pinned fingerprint.

    + label: what the repository is, for the operation names ("GitHub CLI")
    + key_url: where the signing key is downloaded from
    + fingerprint: the pinned fingerprint the key must have
    + keyring: the keyring file under /etc/apt/keyrings the source names in signed-by
    + source: the one-line apt source
    + list_file: the file under /etc/apt/sources.list.d
    + present_keys: fingerprints the keyring holds now (from the probe)

    Returns the operations whose change calls for an ``apt-get update``.
    """
    from deploy.roles.managed import text_file

    wanted = fingerprint.replace(" ", "").upper()
    key_op = converge(
        name=f"Ensure the {label} signing key is pinned to {wanted}",
        commands=[keyring_script(key_url, wanted, keyring)],
        done=present_keys == [wanted],
        state=f"{label} keyring holds {wanted}",
    )
    list_op = text_file(name=f"Ensure the {label} apt repository is configured",
                        path=list_file, content=source + "\n")
    return [key_op, list_op]


def apt_source(url: str, suite: str, component: str, keyring: str, arch: str) -> str:
    """A one-line apt source signed by ``keyring``.

    >>> apt_source("https://x/packages", "stable", "main", "/etc/apt/keyrings/x.gpg", "amd64")
    'deb [arch=amd64 signed-by=/etc/apt/keyrings/x.gpg] https://x/packages stable main'
    """
    return f"deb [arch={arch} signed-by={keyring}] {url.rstrip('/')} {suite} {component}"
