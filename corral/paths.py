"""Where corral keeps its files on the host: config, state and the render folder."""

import os
from pathlib import Path

#: The checkout corral runs from (tasks.py, templates/, deploy/ live here).
ROOT = Path(__file__).resolve().parent.parent

TEMPLATES = ROOT / "templates"
SCRIPTS = ROOT / "scripts"
DEPLOY = ROOT / "deploy"
DEFAULT_INVENTORY = ROOT / "inventory" / "vms.yaml"
VERSIONS_FILE = ROOT / "inventory" / "versions.yaml"


def config_dir() -> Path:
    """corral's config folder: the SSH key it generates and ``secrets.env``.

    ``$CORRAL_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/corral``, else ``~/.config/corral``.
    """
    if explicit := os.environ.get("CORRAL_CONFIG_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "corral"


def state_dir() -> Path:
    """corral's state folder: per-VM ssh.config and known_hosts, logs, update reports.

    ``$CORRAL_STATE_DIR``, else ``$XDG_STATE_HOME/corral``, else ``~/.local/state/corral``.
    """
    if explicit := os.environ.get("CORRAL_STATE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "corral"


def build_dir() -> Path:
    """The git-ignored folder rendered Lima definitions are written to."""
    return Path(os.environ.get("CORRAL_BUILD_DIR") or ROOT / ".build")
