"""Go: the official tarball checked against a pinned sha256, or the distribution's package."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from deploy.roles import managed
from deploy.roles.common import (
    CACHE,
    converge,
    download_script,
    pinned_sha256,
    probe,
    upstream_arch,
)
from deploy.roles.managed import symlink

GOROOT = "/usr/local/go"


def tarball_url(base: str, version: str, arch: str) -> str:
    """go.dev's tarball of Go ``version`` for a Debian ``arch``.

    >>> tarball_url("https://go.example/dl", "1.26.7", "arm64")
    'https://go.example/dl/go1.26.7.linux-arm64.tar.gz'
    """
    return f"{base.rstrip('/')}/go{version}.linux-{upstream_arch(arch, 'go')}.tar.gz"


def install_commands(url: str, sha256: str, version: str) -> list[str]:
    """Download, check, then swap the new tree in: a failure leaves the old one in place."""
    tarball = f"{CACHE}/go{version}.tar.gz"
    return [
        download_script(url, tarball, sha256),
        f"set -e; rm -rf {GOROOT}.new; mkdir -p {GOROOT}.new; "
        f"tar -C {GOROOT}.new --strip-components=1 -xzf {tarball}; "
        f"rm -rf {GOROOT}; mv {GOROOT}.new {GOROOT}; rm -f {tarball}",
    ]


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"links": ["/usr/local/bin/go", "/usr/local/bin/gofmt"]}


@deploy("go")
def go():
    """Ensure Go is installed from the chosen source."""
    data = host.data.dict()
    if data.get("go_source", "official") == "distro":
        managed.packages(name="Ensure Go is installed", packages=["golang-go"])
        return

    guest = probe()
    version = str(data["go_version"])
    arch = guest["arch"]
    sha = pinned_sha256(data["go_sha256"], arch, "go.sha256")
    converge(name=f"Ensure Go {version} is installed in {GOROOT}",
             commands=install_commands(tarball_url(data["go_url"], version, arch), sha, version),
             done=guest["go"] == f"go{version}", state=f"Go {version}")
    for tool in ("go", "gofmt"):
        symlink(name=f"Ensure {tool} is on PATH", path=f"/usr/local/bin/{tool}",
                target=f"{GOROOT}/bin/{tool}")
