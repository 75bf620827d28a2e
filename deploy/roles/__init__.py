"""corral's roles, in the order a VM is provisioned, and which of them a VM gets."""

from __future__ import annotations

from typing import Any

# Every role, in provisioning order. Toolchain roles run only for the VM's `toolchains`.
ROLE_NAMES = ("base", "security", "gh", "nodejs", "opencode", "python", "go", "rust",
              "shell", "credentials")
# The toolchain each toolchain role installs (the `toolchains:` key names toolchains).
TOOLCHAIN_ROLES = {"python": "python", "nodejs": "node", "go": "go", "rust": "rust"}


def selected(data: dict[str, Any], requested: list[str] | None = None) -> list[str]:
    """The roles a VM gets, in order.

    + data: the VM's host data (``toolchains``, ``opencode_source``)
    + requested: only these roles (``--roles``); None for every role

    A toolchain role runs only when the VM lists its toolchain; Node.js also runs when
    OpenCode comes from npm, which needs it.

    >>> selected({"toolchains": ["go"], "opencode_source": "release"})
    ['base', 'security', 'gh', 'opencode', 'go', 'shell', 'credentials']
    """
    toolchains = set(data.get("toolchains") or [])
    wanted = set(requested or ROLE_NAMES)
    roles = []
    for role in ROLE_NAMES:
        if role not in wanted:
            continue
        toolchain = TOOLCHAIN_ROLES.get(role)
        needed_by_opencode = (role == "nodejs" and "opencode" in wanted
                              and data.get("opencode_source", "npm") == "npm")
        if toolchain and toolchain not in toolchains and not needed_by_opencode:
            continue
        roles.append(role)
    return roles


def unknown(requested: list[str]) -> list[str]:
    """The names in ``requested`` that are not roles."""
    return [role for role in requested if role not in ROLE_NAMES]


def run(role: str) -> None:
    """Run one role's deploy on the current host."""
    from importlib import import_module

    module = import_module(f"deploy.roles.{role}")
    getattr(module, role)()


def _is_fingerprint(value: Any) -> bool:
    text = str(value or "").replace(" ", "")
    return len(text) == 40 and all(c in "0123456789abcdefABCDEF" for c in text)


def _has_sum(sums: Any) -> bool:
    return isinstance(sums, dict) and any(
        len(str(v or "")) == 64 for v in sums.values())


def preflight(data: dict[str, Any], roles: list[str]) -> list[str]:
    """Pins the chosen sources need and do not have, as ``key: problem`` lines.

    + data: the VM's host data
    + roles: the roles that will run (see :func:`selected`)

    Checked on the host before anything runs, so that a missing pin costs no half run.
    """
    def missing(*keys: str) -> list[str]:
        return [f"{key.replace('_', '.', 1)}: not set (pin it in inventory/versions.yaml)"
                for key in keys if data.get(key) in (None, "")]

    problems: list[str] = []
    if "gh" in roles and data.get("gh_source") == "github":
        problems += missing("gh_repo_url", "gh_key_url", "gh_key_fingerprint")
        if data.get("gh_key_fingerprint") and not _is_fingerprint(data["gh_key_fingerprint"]):
            problems.append("gh.key_fingerprint: not a 40-digit key fingerprint")
    if "nodejs" in roles and data.get("nodejs_source") == "nodesource":
        problems += missing("nodejs_major", "nodejs_nodesource_url",
                            "nodejs_nodesource_key_url", "nodejs_nodesource_key_fingerprint")
        fingerprint = data.get("nodejs_nodesource_key_fingerprint")
        if fingerprint and not _is_fingerprint(fingerprint):
            problems.append("nodejs.nodesource_key_fingerprint: not a 40-digit key fingerprint")
    if "opencode" in roles:
        problems += missing("opencode_version")
        if data.get("opencode_source") == "release":
            problems += missing("opencode_release_url")
            if not _has_sum(data.get("opencode_release_sha256")):
                problems.append("opencode.release_sha256: no sha256 pinned for any "
                                "architecture (fill it in inventory/versions.yaml, or use "
                                "opencode.source: npm)")
    if "python" in roles:
        problems += missing("python_uv_version")
    if "go" in roles and data.get("go_source") == "official":
        problems += missing("go_version", "go_url")
        if not _has_sum(data.get("go_sha256")):
            problems.append("go.sha256: no sha256 pinned for any architecture")
    if "rust" in roles and data.get("rust_source") == "rustup":
        problems += missing("rust_toolchain", "rust_rustup_version", "rust_rustup_url",
                            "rust_dist_server")
        if not _has_sum(data.get("rust_rustup_sha256")):
            problems.append("rust.rustup_sha256: no sha256 pinned for any architecture")
    return problems
