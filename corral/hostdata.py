"""The data corral's roles receive for one VM: inventory keys with pins filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from corral import paths
from corral.config import ROLE_SECTIONS, VM, display
from corral.errors import ConfigError


def load_versions(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The pins of inventory/versions.yaml: ``{"go": {"version": ..., "sha256": {...}}}``.

    + path: the file to read (default: ``inventory/versions.yaml`` of this checkout)

    Raises :class:`ConfigError` naming the file when it is missing or malformed.
    """
    path = path or paths.VERSIONS_FILE
    shown = display(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{shown}: no such file (restore it from the repository)"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{shown}: malformed YAML ({err})"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"{shown}: expected one mapping per role (gh:, go:, ...)"])
    for role, pins in document.items():
        if role not in ROLE_SECTIONS:
            raise ConfigError([f"{shown}: {role}: not a role (known: {', '.join(ROLE_SECTIONS)})"])
        if not isinstance(pins, dict):
            raise ConfigError([f"{shown}: {role}: expected a mapping of keys"])
    return document


def pinned(versions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pins flattened like role data: ``{"go_version": "1.26.7", ...}``."""
    return {f"{role}_{key}": value
            for role, pins in versions.items() for key, value in pins.items()}


def host_data(vm: VM, versions: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Exactly the host data the roles of ``vm`` receive.

    + vm: a VM of a loaded inventory
    + versions: the pins (default: :func:`load_versions`)

    Role keys come prefixed (``gh_source``, ``go_version``); a key the inventory leaves
    unset takes its value from versions.yaml, and pins the inventory has no key for
    (``gh_key_fingerprint``, ``go_sha256``) are added as they are. Then come the VM-wide
    keys: ``agent_user``, ``login_user``, ``toolchains``, ``mount_point`` ...

    >>> from corral.config import load_inventory
    >>> from corral.paths import DEFAULT_INVENTORY
    >>> data = host_data(load_inventory(DEFAULT_INVENTORY).vms["agent"])
    >>> data["gh_source"], data["agent_user"] == data["login_user"]
    ('github', True)
    """
    data = pinned(load_versions() if versions is None else versions)
    for key, value in vm.role_data().items():
        if value is not None or key not in data:
            data[key] = value
    settings = vm.settings
    data.update({
        "vm_name": vm.name,
        "image": settings.image,
        "agent_user": vm.agent,
        "login_user": vm.login_user,
        "toolchains": list(settings.toolchains),
        "mount": settings.mount,
        "mount_point": vm.mount_point,
        "project": str(vm.project),
        "update_policy": settings.update_policy,
        "ca_certs": [str(cert) for cert in vm.ca_certs],
    })
    return data
