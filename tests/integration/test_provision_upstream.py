"""The upstream download paths (GitHub's apt repository, Go's tarball), against a local
server on the Incus bridge: a signed apt repository with its own key, a tarball with a
known sha256, and the two ways they must fail: a wrong fingerprint, a tampered tarball."""

from __future__ import annotations

import email.utils
import functools
import hashlib
import http.server
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

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

GH_VERSION = "9.9.9"
GO_VERSION = "1.99.0"


def _bridge_address() -> str:
    """The host's IPv4 address on the Incus bridge containers use."""
    networks = json.loads(subprocess.run(["incus", "network", "list", "--format", "json"],
                                         capture_output=True, text=True, check=True).stdout)
    for network in networks:
        address = (network.get("config") or {}).get("ipv4.address", "")
        if network.get("managed") and network.get("type") == "bridge" and "/" in address:
            return address.split("/")[0]
    raise AssertionError("no managed Incus bridge with an IPv4 address")


def _gpg(home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--batch", "--homedir", str(home), *args],
                          capture_output=True, check=True, **kwargs)


def _signing_key(folder: Path) -> tuple[Path, str]:
    home = folder / "gnupg"
    home.mkdir(mode=0o700)
    _gpg(home, "--passphrase", "", "--quick-gen-key", "corral test repo <t@example.invalid>",
         "ed25519", "sign", "never")
    listing = _gpg(home, "--with-colons", "--list-keys", text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                       if line.startswith("fpr:"))
    return home, fingerprint


def _deb(folder: Path, arch: str) -> Path:
    """A stand-in ``gh`` package whose binary prints a version no real gh has."""
    root = folder / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: gh\nVersion: {GH_VERSION}\nArchitecture: {arch}\n"
        "Maintainer: corral tests <t@example.invalid>\nDescription: stand-in GitHub CLI\n")
    gh = root / "usr" / "bin" / "gh"
    gh.write_text(f"#!/bin/sh\necho 'gh version {GH_VERSION} (corral test repository)'\n")
    gh.chmod(0o755)
    deb = folder / "gh.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   capture_output=True, check=True)
    return deb


def _apt_repository(web: Path, home: Path, arch: str) -> None:
    """web/apt: pool/gh.deb and dists/stable, InRelease signed with the key in ``home``."""
    repo = web / "apt"
    pool = repo / "pool"
    pool.mkdir(parents=True)
    deb = _deb(web.parent, arch)
    payload = deb.read_bytes()
    (pool / f"gh_{GH_VERSION}_{arch}.deb").write_bytes(payload)
    control = (web.parent / "debroot" / "DEBIAN" / "control").read_text().rstrip("\n")
    packages = (f"{control}\nFilename: pool/gh_{GH_VERSION}_{arch}.deb\n"
                f"Size: {len(payload)}\nSHA256: {hashlib.sha256(payload).hexdigest()}\n\n")
    index = repo / "dists" / "stable" / "main" / f"binary-{arch}"
    index.mkdir(parents=True)
    (index / "Packages").write_text(packages)
    data = packages.encode()
    release = (
        "Origin: corral-test\nLabel: corral-test\nSuite: stable\nCodename: stable\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: {arch}\n"
        "Components: main\nSHA256:\n"
        f" {hashlib.sha256(data).hexdigest()} {len(data)} main/binary-{arch}/Packages\n"
    )
    (repo / "dists" / "stable" / "Release").write_text(release)
    _gpg(home, "--digest-algo", "SHA512", "--clearsign", "--output",
         str(repo / "dists" / "stable" / "InRelease"), str(repo / "dists" / "stable" / "Release"))
    (web / "key.asc").write_bytes(_gpg(home, "--armor", "--export").stdout)


def _go_tarball(arch: str, tampered: bool = False) -> bytes:
    """A stand-in Go release: go/VERSION and a go/bin/go that answers ``go version``."""
    files = {
        "go/VERSION": f"go{GO_VERSION}\ntime 2026-01-01T00:00:00Z\n",
        "go/bin/go": f"#!/bin/sh\necho 'go version go{GO_VERSION} linux/{arch}'\n",
        "go/bin/gofmt": "#!/bin/sh\nexit 0\n",
    }
    if tampered:
        files["go/bin/go"] += "echo tampered\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream(incus, tmp_path_factory):
    """A local server on the bridge with the repository, the key and two Go tarballs."""
    need(subprocess.run(["which", "dpkg-deb"], capture_output=True).returncode == 0,
         "dpkg-deb is needed to build the test repository")
    folder = tmp_path_factory.mktemp("upstream")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    web = folder / "web"
    web.mkdir()
    home, fingerprint = _signing_key(folder)
    _apt_repository(web, home, arch)
    good = _go_tarball(arch)
    for where, payload in (("go", good), ("go-tampered", _go_tarball(arch, tampered=True))):
        (web / where).mkdir()
        (web / where / f"go{GO_VERSION}.linux-{arch}.tar.gz").write_bytes(payload)

    handler = functools.partial(_QuietHandler, directory=str(web))
    server = http.server.ThreadingHTTPServer((_bridge_address(), 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://{server.server_address[0]}:{server.server_address[1]}"
    yield {"base": base, "fingerprint": fingerprint, "arch": arch,
           "go_sha256": hashlib.sha256(good).hexdigest()}
    server.shutdown()


@pytest.fixture(scope="module")
def upstream_vm(upstream, tmp_path_factory):
    """A fresh container for the upstream paths; returns a function writing its inventory."""
    name = unique_name("roles-up")
    folder = tmp_path_factory.mktemp("upstream-vm")

    def configure(fingerprint: str, go_dir: str) -> dict:
        inventory = write_inventory(folder, name, toolchains=["go"], gh={
            "source": "github", "repo_url": f"{upstream['base']}/apt",
            "key_url": f"{upstream['base']}/key.asc", "key_fingerprint": fingerprint,
        }, go={
            "source": "official", "version": GO_VERSION, "url": f"{upstream['base']}/{go_dir}",
            "sha256": {upstream["arch"]: upstream["go_sha256"]},
        })
        return corral_env(folder, inventory)

    env = configure(upstream["fingerprint"], "go")
    run_invoke("vm.create", "--name", name, env=env)
    try:
        yield name, configure
    finally:
        run_invoke("vm.delete", "--name", name, "--yes", env=env, check=False)
        force_delete(name)


def _ssh(env: dict, name: str, command: str) -> subprocess.CompletedProcess:
    state = Path(env["CORRAL_STATE_DIR"]) / "incus" / name / "ssh.config"
    return ssh_run(state, f"incus-{name}", command, check=False)


def _provision(env: dict, name: str, roles: str, *extra: str) -> subprocess.CompletedProcess:
    return run_invoke("vm.provision", "--name", name, "--roles", roles, *extra, env=env,
                      check=False)


def test_wrong_key_fingerprint_fails_and_installs_nothing(upstream_vm):
    name, configure = upstream_vm
    env = configure("0123456789ABCDEF0123456789ABCDEF01234567", "go")
    result = _provision(env, name, "base,gh")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "gh |" in last and "does not hold the key with the pinned fingerprint" in last
    left = _ssh(env, name, "ls /etc/apt/keyrings/githubcli-archive-keyring.gpg "
                           "/etc/apt/sources.list.d/github-cli.list; command -v gh")
    assert left.stdout.strip() == "", left.stdout


def test_tampered_tarball_fails_and_installs_nothing(upstream_vm, upstream):
    name, configure = upstream_vm
    env = configure(upstream["fingerprint"], "go-tampered")
    result = _provision(env, name, "base,go")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"expected the pinned {upstream['go_sha256']}" in last
    left = _ssh(env, name, "ls -d /usr/local/go /var/cache/corral/download.* 2>/dev/null")
    assert left.stdout.strip() == ""


def test_pinned_repository_and_tarball_install_and_converge(upstream_vm, upstream):
    name, configure = upstream_vm
    env = configure(upstream["fingerprint"], "go")
    first = _provision(env, name, "base,gh,go,shell", "--check")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert "second run changed nothing" in first.stdout
    gh = _ssh(env, name, "gh --version")
    assert f"gh version {GH_VERSION} (corral test repository)" in gh.stdout
    go = _ssh(env, name, "go version")
    assert f"go version go{GO_VERSION}" in go.stdout
    keyring = _ssh(env, name, "gpg --batch --show-keys --with-colons "
                              "/etc/apt/keyrings/githubcli-archive-keyring.gpg | grep ^fpr")
    assert upstream["fingerprint"] in keyring.stdout
