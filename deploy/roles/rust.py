"""Rust: rustup-init checked by sha256 with a pinned toolchain, or the distribution's cargo."""

from __future__ import annotations

import shlex

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


def rustup_url(base: str, version: str, arch: str) -> str:
    """rustup-init ``version`` for a Debian ``arch``.

    >>> rustup_url("https://rust.example/rustup/archive", "1.29.0", "amd64")
    'https://rust.example/rustup/archive/1.29.0/x86_64-unknown-linux-gnu/rustup-init'
    """
    return f"{base.rstrip('/')}/{version}/{upstream_arch(arch, 'rust')}/rustup-init"


def toolchain_dir(toolchain: str, arch: str) -> str:
    """The folder rustup gives ``toolchain`` under ~/.rustup/toolchains."""
    return f"{toolchain}-{upstream_arch(arch, 'rust')}"


def rustup_init_command(init: str, toolchain: str, dist_server: str) -> str:
    """Run rustup-init for the agent's user: no PATH edits (the shell role owns PATH)."""
    return (f"RUSTUP_DIST_SERVER={shlex.quote(dist_server)} {init} -y --no-modify-path "
            f"--profile minimal --default-toolchain {shlex.quote(toolchain)}")


@deploy("rust")
def rust():
    """Ensure Rust is installed from the chosen source."""
    data = host.data.dict()
    if data.get("rust_source", "rustup") == "distro":
        managed.packages(name="Ensure Rust and cargo are installed", packages=["cargo", "rustc"])
        return

    guest = probe()
    arch = guest["arch"]
    toolchain = str(data["rust_toolchain"])
    version = str(data["rust_rustup_version"])
    sha = pinned_sha256(data["rust_rustup_sha256"], arch, "rust.rustup_sha256")
    init = f"{CACHE}/rustup-init-{version}"
    done = toolchain_dir(toolchain, arch) in guest["rust_toolchains"]

    # Download and check rustup-init as root, then run it as the agent's user.
    converge(name=f"Ensure rustup-init {version} is downloaded and checked",
             commands=[download_script(rustup_url(data["rust_rustup_url"], version, arch),
                                       init, sha), f"chmod 0755 {init}"],
             done=done, state=f"Rust {toolchain}")
    converge(name=f"Ensure Rust {toolchain} is installed for {data['agent_user']}",
             commands=[rustup_init_command(init, toolchain, data["rust_dist_server"])],
             done=done, state=f"Rust {toolchain}", _sudo_user=data["agent_user"])
