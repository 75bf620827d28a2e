"""PATH and EDITOR for the agent's login and non-interactive shells, as managed blocks."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from deploy.roles.common import converge, probe
from deploy.roles.managed import text_file

PROFILE = "/etc/profile.d/corral.sh"
SECRETS = ".config/corral/secrets.env"
MARKER = "# {mark} CORRAL MANAGED BLOCK"


def path_entries(data: dict[str, Any]) -> list[str]:
    """The folders the agent's PATH gets, after what the distribution sets.

    >>> path_entries({"toolchains": ["go"], "go_source": "official"})
    ['$HOME/.local/bin', '/usr/local/go/bin', '$HOME/go/bin']
    """
    toolchains = data.get("toolchains") or []
    entries = ["$HOME/.local/bin"]
    if "go" in toolchains:
        if data.get("go_source", "official") == "official":
            entries.append("/usr/local/go/bin")
        entries.append("$HOME/go/bin")
    if "rust" in toolchains:
        entries.append("$HOME/.cargo/bin")
    return entries


def profile(data: dict[str, Any]) -> str:
    """/etc/profile.d/corral.sh: adds each PATH entry once and sets EDITOR."""
    lines = ["# Managed by corral (deploy/roles/shell.py); sourced by login shells and,",
             "# through the agent's ~/.bashrc, by non-interactive ones (ssh host cmd)."]
    for entry in path_entries(data):
        lines.append(f'case ":$PATH:" in *":{entry}:"*) ;; *) PATH="$PATH:{entry}" ;; esac')
    lines.append("export PATH")
    lines.append(f"export EDITOR={shlex.quote(data.get('shell_editor') or 'vi')}")
    return "\n".join(lines) + "\n"


def bashrc_block() -> str:
    """The top of the agent's ~/.bashrc, before Debian's early return for non-interactive
    shells: the profile above and the secrets the credentials role wrote."""
    return (f"[ -r {PROFILE} ] && . {PROFILE}\n"
            f'[ -r "$HOME/{SECRETS}" ] && . "$HOME/{SECRETS}"')


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"files": [PROFILE]}


@deploy("shell")
def shell():
    """Ensure the agent's shells get PATH, EDITOR and the secrets."""
    data = host.data.dict()
    guest = probe()
    user = data["agent_user"]

    text_file(name="Ensure PATH and EDITOR are set for login shells", path=PROFILE,
              content=profile(data))
    converge(name=f"Ensure {user} logs in with bash",
             commands=[f"usermod --shell /bin/bash {shlex.quote(user)}"],
             done=guest["agent_shell"] == "/bin/bash", state=f"{user} logs in with bash")
    files.block(name=f"Ensure {user}'s non-interactive shells get the same",
                path=f"{guest['agent_home']}/.bashrc", content=bashrc_block(),
                before=True, after=True, marker=MARKER)
