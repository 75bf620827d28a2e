"""Lima definitions rendered from templates/lima/agent.yaml.j2, one file per VM."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import jinja2

from corral import __version__, paths
from corral.config import VM, display
from corral.errors import ConfigError

log = logging.getLogger(__name__)

TEMPLATE = "lima/agent.yaml.j2"
SETUP_SCRIPT = paths.SCRIPTS / "agent-vm.setup.sh"

# The `_images` base template of each image, as shipped inside Lima (`template:` URLs
# resolve against the templates of the installed limactl, not the network).
IMAGE_BASES = {
    "debian-12": "template:_images/debian-12",
    "debian-13": "template:_images/debian-13",
    "ubuntu-24.04": "template:_images/ubuntu-24.04",
    "ubuntu-26.04": "template:_images/ubuntu-26.04",
}

# The oldest Lima that ships each base with the `template:` (Lima 2) locator syntax:
# debian-13's base arrived in 2.0.0; Ubuntu 26.04's in 2.1.2, and 2.1.4 fixed its first
# boot (NIC rename, LP: #2136392).
MINIMUM_LIMA_VERSIONS = {
    "debian-12": "2.0.0",
    "debian-13": "2.0.0",
    "ubuntu-24.04": "2.0.0",
    "ubuntu-26.04": "2.1.4",
}


def _yaml_str(value: object) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    return json.dumps(str(value), ensure_ascii=False)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(paths.TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML; values go through yaml_str
    )
    env.filters["yaml_str"] = _yaml_str
    return env


def minimum_lima_version(vm: VM) -> str:
    """The oldest Lima release that can create ``vm`` (``2.0.0``, ``2.1.4``)."""
    return MINIMUM_LIMA_VERSIONS[vm.settings.image]


def render(vm: VM) -> str:
    """The Lima definition of ``vm`` as YAML text.

    + vm: a validated VM of the inventory

    Raises :class:`ConfigError` for a shared path or a port that Lima would refuse.
    """
    # Lima expands Go templates in a mount's location and mountPoint.
    for key, value in (("project", str(vm.project)), ("mount_point", vm.mount_point)):
        if "{{" in value and vm.settings.mount != "none":
            raise ConfigError([f"vms.{vm.name}.{key}: {value!r} contains '{{{{', which Lima "
                               "reads as a template expression (rename the folder)"])
    # Lima keeps port 22 for its own SSH forward and refuses a rule that names it.
    for index, forward in enumerate(vm.settings.port_forwards):
        if 22 in (forward.guest, forward.host):
            raise ConfigError([f"vms.{vm.name}.port_forwards.{index}: port 22 is Lima's own "
                               "SSH forward (use ssh -F with the VM's ssh.config instead)"])
    template = _environment().get_template(TEMPLATE)
    return template.render(
        vm=vm,
        image_base=IMAGE_BASES[vm.settings.image].removeprefix("template:"),
        minimum_lima_version=minimum_lima_version(vm),
        setup_script=str(SETUP_SCRIPT),
        corral_version=__version__,
    )


def lima_file(name: str) -> Path:
    """Where the Lima definition of VM ``name`` is written: ``<build dir>/lima/NAME.yaml``."""
    return paths.build_dir() / "lima" / f"{name}.yaml"


def write(vm: VM) -> Path:
    """Render ``vm`` and write it to :func:`lima_file`, replacing the file atomically.

    + vm: a validated VM of the inventory

    Returns the path written. A file already holding the same text is left alone.
    """
    text = render(vm)
    target = lima_file(vm.name)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        log.debug("%s: up to date", target)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as err:
        problem = (f"{display(target)}: cannot write the Lima definition ({err.strerror}; "
                   "set CORRAL_BUILD_DIR to a writable folder)")
        raise ConfigError([problem]) from None
    log.debug("%s: written", target)
    return target
