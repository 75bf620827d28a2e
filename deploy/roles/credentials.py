"""The GitHub token and model key in the guest: mode 0600, the agent's, never printed."""

from __future__ import annotations

import posixpath

from pyinfra import host, logger
from pyinfra.api import deploy

from corral import secrets as host_secrets
from deploy.roles.common import RoleError, note, probe
from deploy.roles.managed import text_file, user_folder

# Where the secrets go in the guest: the agent's home, outside the shared project.
SECRETS_DIRS = ["~/.config", "~/.config/corral"]
SECRETS_FILE = "~/.config/corral/secrets.env"


def outside_mount(path: str, mount_point: str | None) -> bool:
    """True when ``path`` in the guest is not inside the folder shared with the host."""
    if not mount_point:
        return True
    mount = posixpath.normpath(mount_point)
    path = posixpath.normpath(path)
    return path != mount and not path.startswith(mount.rstrip("/") + "/")


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"files": [SECRETS_FILE], "dirs": SECRETS_DIRS}


@deploy("credentials")
def credentials():
    """Ensure the secrets found on the host are in the guest, private to the agent."""
    data = host.data.dict()
    guest = probe()
    found = host_secrets.for_vm(data)
    key_env = data.get("credentials_model_key_env") or "AZURE_OPENAI_API_KEY"
    for name in (host_secrets.GITHUB_TOKEN_ENV, key_env):
        if name not in found:
            where = f"environment or {host_secrets.secrets_file()}"
            note(name=f"Skip {name}: not set on the host ({where})",
                 message=f"no {name} on the host ({where}); not written to the guest")
    if not found:
        return

    dest = guest["agent_home"] + SECRETS_FILE[1:]
    if not outside_mount(dest, data.get("mount_point")):
        raise RoleError(f"{dest}: inside the shared folder {data.get('mount_point')}; "
                        "choose another mount_point")
    user = data["agent_user"]
    for folder, mode in zip(SECRETS_DIRS, (None, "700"), strict=True):
        user_folder(name=f"Ensure {folder} belongs to {user}", path=folder, user=user, mode=mode)
    logger.debug("writing %s to %s", ", ".join(sorted(found)), dest)
    text_file(name=f"Ensure {', '.join(sorted(found))} are in {SECRETS_FILE} (mode 0600)",
              path=SECRETS_FILE, content=host_secrets.env_file(found), mode="600", user=user,
              private=True)
