"""OpenCode, the coding agent: npm package or checked release binary, and its model config."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import deploy

from deploy.roles.common import (
    CACHE,
    SYSTEM_CA_BUNDLE,
    RoleError,
    converge,
    download_script,
    pinned_sha256,
    probe,
    upstream_arch,
)
from deploy.roles.managed import text_file, user_folder

NPM_PACKAGE = "opencode-ai"
NPM_PREFIX = "/usr/local"
RELEASE_DIR = "/usr/local/lib/opencode"
CONFIG_DIRS = ["~/.config", "~/.config/opencode"]
CONFIG_FILE = "~/.config/opencode/opencode.json"


def _azure(data: dict[str, Any]) -> dict[str, Any]:
    key_env = data["credentials_model_key_env"]
    options: dict[str, Any] = {"apiKey": "{env:" + key_env + "}"}
    if data.get("opencode_azure_resource"):
        options["resourceName"] = data["opencode_azure_resource"]
    return {"azure": {"options": options}}


# Model providers OpenCode can be configured for: name -> its "provider" block. The key
# itself is never written here: the config names the variable the credentials role sets.
PROVIDERS = {"azure": _azure}


def config(data: dict[str, Any]) -> dict[str, Any]:
    """OpenCode's opencode.json for the chosen model provider.

    + data: host data with ``opencode_model_provider``, ``opencode_model`` and the
      provider's own keys (``opencode_azure_resource``)
    """
    provider = data["opencode_model_provider"]
    if provider not in PROVIDERS:
        raise RoleError(f"opencode_model_provider: {provider!r} is not one of "
                         f"{', '.join(PROVIDERS)}")
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": f"{provider}/{data['opencode_model']}",
        "provider": PROVIDERS[provider](data),
        "autoupdate": False,
    }


def npm_install_command(version: str) -> str:
    """Install opencode-ai at ``version`` into /usr/local, trusting the system CAs."""
    return (f"NODE_EXTRA_CA_CERTS={SYSTEM_CA_BUNDLE} npm_config_update_notifier=false "
            f"npm install --global --prefix {NPM_PREFIX} --no-audit --no-fund "
            f"{NPM_PACKAGE}@{shlex.quote(version)}")


def release_url(base: str, version: str, arch: str) -> str:
    """The release tarball of OpenCode ``version`` for a Debian ``arch``."""
    return (f"{base.rstrip('/')}/v{version}/"
            f"opencode-linux-{upstream_arch(arch, 'opencode')}.tar.gz")


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"files": [CONFIG_FILE], "dirs": CONFIG_DIRS}


@deploy("opencode")
def opencode():
    """Ensure OpenCode is installed at its pinned version and configured."""
    data = host.data.dict()
    guest = probe()
    version = str(data["opencode_version"])

    if data.get("opencode_source", "npm") == "npm":
        converge(name=f"Ensure OpenCode {version} is installed from npm",
                 commands=[npm_install_command(version)],
                 done=guest["opencode_npm"] == version, state=f"OpenCode {version}")
    else:
        arch = guest["arch"]
        sha = pinned_sha256(data["opencode_release_sha256"], arch, "opencode.release_sha256")
        tarball = f"{CACHE}/opencode-{version}-{arch}.tar.gz"
        converge(
            name=f"Ensure OpenCode {version} is installed from its checked release",
            commands=[
                download_script(release_url(data["opencode_release_url"], version, arch),
                                tarball, sha),
                f"set -e; rm -rf {RELEASE_DIR}.new; mkdir -p {RELEASE_DIR}.new; "
                f"tar -C {RELEASE_DIR}.new -xzf {tarball}; "
                f"echo {shlex.quote(version)} > {RELEASE_DIR}.new/VERSION; "
                f"rm -rf {RELEASE_DIR}; mv {RELEASE_DIR}.new {RELEASE_DIR}; "
                f"ln -sfn {RELEASE_DIR}/opencode /usr/local/bin/opencode; rm -f {tarball}",
            ],
            done=guest["opencode_release"] == version, state=f"OpenCode {version}",
        )

    # The model provider's configuration, owned by the agent's user.
    user = data["agent_user"]
    for folder in CONFIG_DIRS:
        user_folder(name=f"Ensure {folder} belongs to {user}", path=folder, user=user)
    text_file(name="Ensure OpenCode is configured for the model provider", path=CONFIG_FILE,
              content=json.dumps(config(data), indent=2) + "\n", user=user)
