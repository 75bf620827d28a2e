"""Tools: the base packages, gh, OpenCode and the configured toolchains, at their pins."""

from __future__ import annotations

import re

import pytest

from deploy.roles.base import packages as base_packages
from deploy.roles.gh import KEYRING as GH_KEYRING
from tests.infra.guest import requires_toolchain, run_as, target

# What the agent types, and how each tool states its version.
VERSION_OF = {
    "gh": ("gh --version", r"^gh version (\S+)"),
    "opencode": ("opencode --version", r"^v?(\d+\.\d+\.\d+\S*)"),
    "uv": ("uv --version", r"^uv (\S+)"),
    "node": ("node --version", r"^v(\S+)"),
    "go": ("go version", r"^go version go(\S+) "),
    "rustc": ("rustc --version", r"^rustc (\S+) "),
    "cargo": ("cargo --version", r"^cargo (\S+) "),
}


def version(host, user: str, tool: str) -> str:
    """The version ``tool`` reports when ``user`` runs it from a non-interactive shell."""
    command, pattern = VERSION_OF[tool]
    result = run_as(host, user, command)
    assert result.rc == 0, (
        f"'{command}' fails for {user} in a non-interactive shell: "
        f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    match = re.search(pattern, result.stdout.strip(), re.MULTILINE)
    assert match, f"'{command}' printed no version: {result.stdout.strip()[:80]}"
    return match.group(1)


def pytest_generate_tests(metafunc):
    """One test per base package, so that a missing one is named in the report."""
    if "base_package" in metafunc.fixturenames:
        extra = target()[1].get("base_extra_packages") or []
        metafunc.parametrize("base_package", base_packages(extra))


def test_base_package_is_installed(host, base_package):
    assert host.package(base_package).is_installed, f"{base_package} is not installed"


def test_gh_runs_for_the_agent(host, agent_user):
    assert version(host, agent_user, "gh")


def test_gh_comes_from_the_configured_source(host, data):
    policy = host.run("apt-cache policy gh").stdout
    installed = re.search(r"\*\*\* \S+ \d+\n((?:\s+\d+ .*\n?)+)", policy)
    assert installed, "gh is not installed as a package"
    origins = installed.group(1)
    if data["gh_source"] == "github":
        assert data["gh_repo_url"].rstrip("/") in origins, (
            f"the installed gh does not come from {data['gh_repo_url']}")
    else:
        assert data["gh_repo_url"].rstrip("/") not in origins, (
            "gh_source is distro, but the installed gh comes from GitHub's repository")


def test_gh_keyring_holds_only_the_pinned_key(host, data):
    if data["gh_source"] != "github":
        pytest.skip("gh comes from the distribution: no GitHub keyring")
    keyring = host.file(GH_KEYRING)
    assert keyring.exists, f"{GH_KEYRING} is missing"
    assert keyring.user == "root" and keyring.mode & 0o022 == 0, (
        f"{GH_KEYRING} is writable by others than root")

    listing = host.run(
        "g=$(mktemp -d) && GNUPGHOME=$g gpg --batch --show-keys --with-colons %s; "
        "r=$?; rm -rf \"$g\"; exit $r", GH_KEYRING)

    assert listing.rc == 0, f"gpg cannot read {GH_KEYRING}: {listing.stderr.strip()}"
    primaries = re.findall(r"^pub:.*\nfpr:(?::*)([0-9A-F]{40}):", listing.stdout, re.MULTILINE)
    pinned = data["gh_key_fingerprint"].replace(" ", "").upper()
    assert primaries == [pinned], f"{GH_KEYRING} holds {primaries}, expected only {pinned}"


def test_opencode_runs_at_the_pinned_version(host, data, agent_user):
    found = version(host, agent_user, "opencode")

    if data["opencode_track"] == "pinned":
        assert found == data["opencode_version"], (
            f"opencode is {found}, pinned {data['opencode_version']}")


def test_uv_runs_at_the_pinned_version(host, data, agent_user):
    requires_toolchain(data, "python")

    found = version(host, agent_user, "uv")

    if data["python_track"] == "pinned":
        assert found == data["python_uv_version"], (
            f"uv is {found}, pinned {data['python_uv_version']}")


def test_node_runs_at_the_configured_major_version(host, data, agent_user):
    requires_toolchain(data, "node")

    found = version(host, agent_user, "node")

    if data["nodejs_source"] == "nodesource":
        assert found.split(".")[0] == str(data["nodejs_major"]), (
            f"node is {found}, configured major {data['nodejs_major']}")
    else:
        assert host.package("nodejs").is_installed, "node does not come from the distribution"


def test_go_runs_at_the_pinned_version(host, data, agent_user):
    requires_toolchain(data, "go")

    found = version(host, agent_user, "go")

    if data["go_source"] == "official" and data["go_track"] == "pinned":
        assert found == data["go_version"], f"go is {found}, pinned {data['go_version']}"
    elif data["go_source"] == "distro":
        assert host.package("golang-go").is_installed, "go does not come from the distribution"


@pytest.mark.parametrize("tool", ["rustc", "cargo"])
def test_rust_runs_at_the_pinned_toolchain(host, data, agent_user, tool):
    requires_toolchain(data, "rust")

    found = version(host, agent_user, tool)

    if data["rust_source"] == "rustup" and tool == "rustc":
        assert found == data["rust_toolchain"], (
            f"rustc is {found}, pinned {data['rust_toolchain']}")
