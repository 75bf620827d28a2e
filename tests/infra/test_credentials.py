"""Credentials: the token and model key only in the agent's private secrets file, and usable.

No test here reads a secret out of the guest or sends one to it: the guest reports sha256
sums, the host compares them with the sums of the secrets it holds.
"""

from __future__ import annotations

import hashlib

import pytest

from corral import secrets as host_secrets
from deploy.roles.credentials import SECRETS_FILE
from tests.infra.guest import run_as

# Folders below a home that hold downloaded toolchains and caches, not anyone's secrets:
# skipped by the search so that it stays quick.
BULKY = [".rustup", ".cargo/registry", ".cargo/git", "go/pkg", ".cache", ".npm",
         "node_modules"]

# Runs in the guest as root: prints each readable text file under the given folders that
# contains a word whose sha256 is one of the given sums. Words are runs of the characters
# tokens and keys are made of.
SEARCH = r"""
import hashlib, os, re, sys
sums = set(sys.argv[1].split(","))
bulky = sys.argv[2].split(",")
roots = sys.argv[3:]
word = re.compile(rb"[A-Za-z0-9_\-+/.~]{16,}")
for root in roots:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not any(
            os.path.join(folder, d).endswith("/" + b) for b in bulky)]
        for name in files:
            path = os.path.join(folder, name)
            try:
                if not os.path.isfile(path) or os.path.getsize(path) > 4 << 20:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if b"\0" in data[:8192]:
                continue
            if any(hashlib.sha256(w).hexdigest() in sums for w in set(word.findall(data))):
                print(path)
"""

# Outside the project, the places a secret could be left lying around.
GITHUB_API = "https://api.github.com/"

PLACES = ["/home", "/root", "/tmp", "/var/tmp", "/etc", "/opt", "/srv", "/usr/local"]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def secrets_file(host, agent_user) -> str:
    # The role names it relative to the agent's home ("~/.config/...").
    return f"{host.user(agent_user).home}/{SECRETS_FILE.removeprefix('~/')}"


@pytest.fixture(scope="module")
def copies(host, data, secrets) -> dict[str, list[str]]:
    """Where in the guest a copy of a host secret sits: ``{"project": [...], "elsewhere":
    [...]}`` (the secrets file included)."""
    if not secrets:
        return {"project": [], "elsewhere": []}
    sums = ",".join(sha256(value) for value in secrets.values())
    places = {"elsewhere": PLACES}
    if data["mount"] != "none":
        places["project"] = [data["mount_point"]]
    found = {"project": [], "elsewhere": []}
    for where, roots in places.items():
        with host.sudo():
            result = host.run("python3 -c %s %s %s " + " ".join(["%s"] * len(roots)),
                              SEARCH, sums, ",".join(BULKY), *roots)
        assert result.rc == 0, f"searching the guest failed: {result.stderr.strip()[-200:]}"
        found[where] = sorted(result.stdout.split("\n")[:-1] if result.stdout else [])
    return found


def test_secrets_file_is_private_to_the_agent(host, agent_user, secrets, secrets_file):
    # As root: the agent's home is closed to the login user when they are not the same.
    with host.sudo():
        file = host.file(secrets_file)
        exists = file.exists
        if exists:
            is_plain, mode, owner = file.is_file and not file.is_symlink, file.mode, file.user
            folder_mode = host.file(secrets_file.rsplit("/", 1)[0]).mode
    if not exists:
        assert not secrets, (
            f"{secrets_file} is missing, but the host has {', '.join(sorted(secrets))}")
        pytest.skip("no secrets on the host and none in the guest")

    assert is_plain, f"{secrets_file} is not a plain file"
    assert mode == 0o600, f"{secrets_file} is mode {mode:04o}, not 0600"
    assert owner == agent_user, f"{secrets_file} belongs to {owner}, not {agent_user}"
    assert folder_mode & 0o077 == 0, (
        f"{secrets_file.rsplit('/', 1)[0]} is mode {folder_mode:04o}: others can look into it")


def test_secrets_file_holds_exactly_the_hosts_secrets(host, secrets, secrets_file):
    if not secrets:
        pytest.skip("no GH_TOKEN or model key on the host: nothing was provisioned")
    with host.sudo():
        in_guest = host.file(secrets_file).sha256sum

    assert in_guest == sha256(host_secrets.env_file(secrets)), (
        f"{secrets_file} does not hold the host's current secrets (run vm.provision)")


def test_no_secret_is_in_the_shared_project_folder(data, copies):
    if data["mount"] == "none":
        pytest.skip("this VM shares no project folder (mount: none)")

    assert copies["project"] == [], (
        f"secrets in the folder shared with the host: {', '.join(copies['project'])}")


def test_no_secret_is_anywhere_else_in_the_guest(copies, secrets_file):
    elsewhere = [path for path in copies["elsewhere"] if path != secrets_file]

    assert elsewhere == [], f"secrets outside {secrets_file}: {', '.join(elsewhere)}"


def test_agent_shells_get_the_hosts_secrets(host, agent_user, secrets):
    if not secrets:
        pytest.skip("no GH_TOKEN or model key on the host: nothing was provisioned")
    for name, value in sorted(secrets.items()):
        got = run_as(host, agent_user, f'printf %s "${{{name}:-}}" | sha256sum')

        assert got.stdout.split()[:1] == [sha256(value)], (
            f"{name} in {agent_user}'s non-interactive shell is not the host's")


def test_gh_auth_status_succeeds_with_the_provisioned_token(host, agent_user, secrets):
    if host_secrets.GITHUB_TOKEN_ENV not in secrets:
        pytest.skip("no GH_TOKEN on the host: gh is not logged in")
    # gh reports any failed request as an invalid token: ask GitHub's API directly first.
    reach = run_as(host, agent_user, f"curl -sS -o /dev/null --max-time 15 {GITHUB_API}")
    if reach.rc != 0:
        pytest.skip(f"GitHub's API is unreachable from the VM ({_last(reach.stderr)}): "
                    "gh auth status cannot check the token")

    status = run_as(host, agent_user, "gh auth status --hostname github.com 2>&1")

    said = status.stdout
    # Some gh releases exit 0 even when the token is refused: read what it says too.
    assert status.rc == 0 and "Logged in to github.com" in said \
        and "Failed to log in" not in said, f"gh auth status fails: {_last(said)}"


def _last(said: str) -> str:
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"
