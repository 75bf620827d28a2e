"""The inventory users edit: loading, merging defaults, and validation with clear errors."""

from __future__ import annotations

import difflib
import getpass
import glob
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from corral import paths
from corral.errors import ConfigError, MachineNotFound

IMAGES = ("debian-13", "debian-12", "ubuntu-24.04", "ubuntu-26.04")
TOOLCHAINS = ("python", "node", "go", "rust")

# Lima refuses these as mount points (and any path starting with "~").
FORBIDDEN_MOUNT_POINTS = frozenset(
    ["/", "/bin", "/dev", "/etc", "/home", "/opt", "/sbin", "/tmp", "/usr", "/var"]
)

# A VM name must be usable as a Lima instance name, an Incus container name and, with
# the "lima-"/"incus-" prefix, a host name of at most 63 characters.
NAME_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,55}[a-z0-9])?$")

_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB)\s*$")
_SIZE_FACTORS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def _check_size(value: str) -> str:
    match = _SIZE_PATTERN.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (use e.g. 8GiB)")
    number, unit = match.groups()
    if float(number) <= 0:
        raise ValueError(f"{value!r} is not a size (use e.g. 8GiB)")
    return f"{number}{unit}"


def size_bytes(size: str) -> int:
    """Bytes in a size such as ``8GiB``.

    >>> size_bytes("1.5KiB")
    1536
    """
    number, unit = _SIZE_PATTERN.match(size).groups()
    return int(float(number) * _SIZE_FACTORS[unit])


Size = Annotated[str, AfterValidator(_check_size)]


class Section(BaseModel):
    """A strict block of the inventory: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PortForward(Section):
    """One guest port reachable on the host (loopback only unless ``host_ip`` says so)."""

    guest: int = Field(ge=1, le=65535)
    host: int = Field(ge=1, le=65535)
    host_ip: str = "127.0.0.1"


# One section per role, named after it. The pyinfra inventory flattens each to host data
# prefixed with the role's name (``gh: {source: distro}`` becomes ``gh_source``). A value
# left at None is taken from inventory/versions.yaml.


class BaseRole(Section):
    # Packages added to the base set (git, curl, jq, ripgrep, fd, build tools, ...).
    extra_packages: list[str] = []
    # Seconds apt waits for another apt/dpkg to release its lock before failing.
    apt_lock_timeout: int = Field(default=300, ge=0)


class SecurityRole(Section):
    # Reboot automatically when an update needs it, at this time ("" never reboots).
    reboot_time: str = ""


class GhRole(Section):
    source: Literal["github", "distro"] = "github"
    allow_classic_token: bool = False
    # GitHub's apt repository, its signing key and the key's pinned fingerprint.
    repo_url: str | None = None
    key_url: str | None = None
    key_fingerprint: str | None = None


class NodejsRole(Section):
    source: Literal["distro", "nodesource"] = "distro"
    major: int | None = None
    # NodeSource's apt repository ("{major}" is replaced), its key and fingerprint.
    nodesource_url: str | None = None
    nodesource_key_url: str | None = None
    nodesource_key_fingerprint: str | None = None


class OpencodeRole(Section):
    source: Literal["npm", "release"] = "npm"
    version: str | None = None
    track: Literal["pinned", "latest"] = "pinned"
    model_provider: Literal["azure"] = "azure"
    model: str = "gpt-4.1"
    azure_resource: str = ""
    # Where release tarballs live and their sha256 per architecture (amd64, arm64).
    release_url: str | None = None
    release_sha256: dict[str, str] | None = None


class PythonRole(Section):
    uv_version: str | None = None
    track: Literal["pinned", "latest"] = "pinned"


class GoRole(Section):
    source: Literal["official", "distro"] = "official"
    version: str | None = None
    track: Literal["pinned", "latest"] = "pinned"
    # Where go<version>.linux-<arch>.tar.gz lives and its sha256 per architecture.
    url: str | None = None
    sha256: dict[str, str] | None = None


class RustRole(Section):
    source: Literal["rustup", "distro"] = "rustup"
    toolchain: str | None = None
    # rustup-init: version, download location, sha256 per architecture; toolchain server.
    rustup_version: str | None = None
    rustup_url: str | None = None
    rustup_sha256: dict[str, str] | None = None
    dist_server: str | None = None


class ShellRole(Section):
    editor: str = "vi"


class CredentialsRole(Section):
    # Name of the variable holding the model provider's key (on the host and in the guest).
    model_key_env: str = "AZURE_OPENAI_API_KEY"


ROLE_SECTIONS: dict[str, type[Section]] = {
    "base": BaseRole,
    "security": SecurityRole,
    "gh": GhRole,
    "nodejs": NodejsRole,
    "opencode": OpencodeRole,
    "python": PythonRole,
    "go": GoRole,
    "rust": RustRole,
    "shell": ShellRole,
    "credentials": CredentialsRole,
}


class VMSettings(Section):
    """Every key a VM accepts, as written in ``defaults:`` or under ``vms.NAME``."""

    provider: Literal["auto", "lima", "incus"] = "auto"
    image: Literal["debian-13", "debian-12", "ubuntu-24.04", "ubuntu-26.04"] = "debian-13"
    cpus: int = Field(default=4, ge=1, le=512)
    memory: Size = "4GiB"
    disk: Size = "20GiB"
    project: Path | None = None
    mount: Literal["writable", "readonly", "none"] = "writable"
    mount_point: str | None = None
    ca_certs: list[str] = []
    port_forwards: list[PortForward] = []
    toolchains: list[Literal["python", "node", "go", "rust"]] = ["python", "node"]
    agent_user: str | None = None
    update_policy: Literal["security", "all"] = "security"

    base: BaseRole = BaseRole()
    security: SecurityRole = SecurityRole()
    gh: GhRole = GhRole()
    nodejs: NodejsRole = NodejsRole()
    opencode: OpencodeRole = OpencodeRole()
    python: PythonRole = PythonRole()
    go: GoRole = GoRole()
    rust: RustRole = RustRole()
    shell: ShellRole = ShellRole()
    credentials: CredentialsRole = CredentialsRole()

    @field_validator("toolchains")
    @classmethod
    def _no_repeated_toolchain(cls, value: list[str]) -> list[str]:
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once")
        return value

    @field_validator("mount_point")
    @classmethod
    def _mount_point_allowed(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("~"):
            raise ValueError(f"{value!r} starts with '~' (Lima refuses it; use e.g. /work/app)")
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path (use e.g. /work/app)")
        normal = os.path.normpath(value)
        if ".." in Path(value).parts:
            raise ValueError(f"{value!r} contains '..' (use e.g. /work/app)")
        if normal in FORBIDDEN_MOUNT_POINTS:
            raise ValueError(f"{value!r} is a system folder Lima refuses (use e.g. /work/app)")
        # Lima's guest home: /home/USER.guest since Lima 2.1, still reachable as USER.linux.
        if normal in (f"/home/{_host_user()}.linux", f"/home/{_host_user()}.guest"):
            raise ValueError(f"{value!r} is the guest's home folder (use e.g. /work/app)")
        return normal


@dataclass(frozen=True)
class VM:
    """One machine of the inventory, defaults merged in and host paths resolved.

    Keys as written by the user are in ``settings`` (``vm.settings.cpus``,
    ``vm.settings.gh.source``); the fields here are the ones corral had to work out.
    """

    name: str
    settings: VMSettings
    project: Path
    mount_point: str
    ca_certs: tuple[Path, ...]

    @property
    def login_user(self) -> str:
        """The guest's login user: named like the host user, as Lima does it.

        A host user ``root`` (CI, ``sudo``) gets ``corral`` instead: the agent must not
        log in as root.
        """
        user = _host_user()
        return "corral" if user == "root" else user

    @property
    def agent(self) -> str:
        """The guest user who runs the agent (``agent_user``, default the login user)."""
        return self.settings.agent_user or self.login_user

    def role_data(self) -> dict[str, Any]:
        """Role sections flattened to prefixed keys: ``{"gh_source": "distro", ...}``."""
        data: dict[str, Any] = {}
        for role in ROLE_SECTIONS:
            for key, value in getattr(self.settings, role).model_dump().items():
                data[f"{role}_{key}"] = value
        return data


@dataclass(frozen=True)
class Inventory:
    """A validated inventory file."""

    path: Path
    vms: dict[str, VM]

    def select(self, names: str | None) -> list[VM]:
        """The VMs named in a comma-separated ``--name`` value, or every VM.

        + names: ``"agent,web"`` or None for all
        """
        if not names:
            return list(self.vms.values())
        chosen = []
        for raw in names.split(","):
            name = normalise_name(raw.strip())
            if name not in self.vms:
                known = ", ".join(self.vms) or "none"
                raise MachineNotFound(
                    f"{display(self.path)}: no VM named {raw.strip()!r} (known: {known})"
                )
            chosen.append(self.vms[name])
        return chosen


def _host_user() -> str:
    return getpass.getuser()


def normalise_name(name: str) -> str:
    """A VM name as corral uses it: lower case, ``_`` read as ``-``."""
    return name.lower().replace("_", "-")


def display(path: Path) -> str:
    """A path as the user should see it in a message: relative when under the cwd."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def inventory_path() -> Path:
    """The inventory in use: ``$CORRAL_INVENTORY`` or the shipped ``inventory/vms.yaml``."""
    explicit = os.environ.get("CORRAL_INVENTORY")
    return Path(explicit) if explicit else paths.DEFAULT_INVENTORY


def load_inventory(path: Path | None = None, *, cwd: Path | None = None) -> Inventory:
    """Read, merge and validate an inventory file.

    + path: the YAML file (default: :func:`inventory_path`)
    + cwd: the folder a VM without ``project`` shares (default: the current directory)

    Raises :class:`ConfigError` whose lines read like a compiler's:
    ``inventory/vms.yaml: vms.web.memory: '8GB' is not a size (use e.g. 8GiB)``.
    """
    path = path or inventory_path()
    shown = display(path)
    document = _read_yaml(path, shown)

    problems: list[str] = []
    vms: dict[str, VM] = {}
    seen: dict[str, str] = {}
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError([f"{shown}: defaults: expected a mapping of keys, got {_kind(defaults)}"])
    entries = document.get("vms")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError([f"{shown}: vms: expected a mapping with at least one VM "
                           "(e.g. 'vms: {agent: {}}')"])

    for raw_name, entry in entries.items():
        raw_name = str(raw_name)
        entry = entry or {}
        where = f"vms.{raw_name}"
        if not isinstance(entry, dict):
            problems.append(f"{shown}: {where}: expected a mapping of keys, got {_kind(entry)}")
            continue
        name = normalise_name(raw_name)
        if not NAME_PATTERN.match(name):
            problems.append(
                f"{shown}: {where}: {raw_name!r} is not a usable VM name (letters, digits "
                "and '-', starting with a letter, at most 57 characters)"
            )
            continue
        if name in seen:
            problems.append(
                f"{shown}: {where}: same name as {seen[name]!r} once normalised "
                "(names are lower-cased and '_' reads as '-'; rename one)"
            )
            continue
        seen[name] = raw_name
        merged = _merge(defaults, entry)
        try:
            settings = VMSettings.model_validate(merged)
        except ValidationError as err:
            problems.extend(_describe(err, shown, raw_name, entry, defaults))
            continue
        vm, vm_problems = _resolve(name, raw_name, settings, entry, path, shown, cwd)
        problems.extend(vm_problems)
        if vm:
            vms[name] = vm

    if problems:
        raise ConfigError(problems)
    return Inventory(path=path, vms=vms)


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    keys = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` merges; keys written next to it override
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark
            )
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _read_yaml(path: Path, shown: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{shown}: no such inventory file "
                           "(create it, or point CORRAL_INVENTORY at one)"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"{shown}: cannot read the inventory ({err})"]) from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        problem = err.problem or err.context or "malformed YAML"
        raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{shown}: malformed YAML: {err}"]) from None
    if document is None:
        raise ConfigError([f"{shown}: the file is empty (it needs at least "
                           "'vms: {agent: {}}'; see the README's inventory reference)"])
    if not isinstance(document, dict):
        raise ConfigError([f"{shown}: expected 'defaults:' and 'vms:' at the top, "
                           f"got {_kind(document)}"])
    unknown = [key for key in document if key not in ("defaults", "vms")]
    if unknown:
        key = str(unknown[0])
        raise ConfigError([f"{shown}: {key}: unknown key{_suggest(key, ['defaults', 'vms'])}"])
    return document


def _merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested mappings (role sections) merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(name, raw_name, settings, entry, path, shown, cwd):
    """Host-side checks that need the file system: project, mount point, ca_certs."""
    problems = []

    def where(key: str) -> str:
        return f"vms.{raw_name}.{key}" if key in entry else f"defaults.{key}"

    base = path.resolve().parent
    project = settings.project
    if project is None:
        project = (cwd or Path.cwd()).resolve()
        project_where = f"vms.{raw_name} (project defaults to the current directory)"
    else:
        project = (base / project.expanduser()).resolve()
        project_where = where("project")
    problem = _project_problem(project)
    if problem:
        problems.append(f"{shown}: {project_where}: {problem}")

    mount_point = settings.mount_point or f"/work/{project.name or 'project'}"

    certs: list[Path] = []
    for pattern in settings.ca_certs:
        full = str(base / os.path.expanduser(pattern))
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not matches:
            problems.append(f"{shown}: {where('ca_certs')}: {pattern!r} matches no file "
                            "(list PEM files the guest must trust)")
        for match in matches:
            problem = _pem_problem(Path(match))
            if problem:
                problems.append(f"{shown}: {where('ca_certs')}: {problem}")
            else:
                certs.append(Path(match))

    if problems:
        return None, problems
    vm = VM(name=name, settings=settings, project=project, mount_point=mount_point,
            ca_certs=tuple(certs))
    return vm, []


def _project_problem(project: Path) -> str | None:
    home = Path.home().resolve()
    if not project.exists():
        return f"{str(project)!r} does not exist (create it or fix the path)"
    if not project.is_dir():
        return f"{str(project)!r} is not a folder (share a project folder)"
    if project == Path("/"):
        return "'/' would share the whole host (share a project folder)"
    if project == home or project in home.parents:
        return (f"{str(project)!r} contains your home folder and would hand the agent your "
                "keys (share a project folder below it)")
    return None


def _pem_problem(cert: Path) -> str | None:
    try:
        text = cert.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"{str(cert)!r} does not exist (list PEM files the guest must trust)"
    except IsADirectoryError:
        return f"{str(cert)!r} is a folder (list PEM files, or a glob such as DIR/*.crt)"
    except OSError as err:
        return f"{str(cert)!r} cannot be read ({err.strerror})"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return f"{str(cert)!r} is not a PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
    return None


def _describe(
    err: ValidationError, shown: str, raw_name: str, entry: dict, defaults: dict
) -> list[str]:
    """One compiler-style line for each problem pydantic found."""
    lines = []
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        top = f"vms.{raw_name}" if _blames_entry(entry, defaults, loc) else "defaults"
        where = ".".join([top, *loc])
        lines.append(f"{shown}: {where}: {_message(problem, loc)}")
    return lines


def _blames_entry(entry: dict, defaults: dict, loc: list[str]) -> bool:
    """Whether the VM's own entry (rather than ``defaults``) holds the value at ``loc``."""
    if _has_path(entry, loc):
        return True
    if _has_path(defaults, loc):
        return False
    # A missing key: blame whichever side wrote the mapping it is missing from.
    return _has_path(entry, loc[:-1]) or not _has_path(defaults, loc[:-1])


def _has_path(data: Any, loc: list[str]) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def _message(problem: dict, loc: list[str]) -> str:
    kind, value = problem["type"], problem.get("input")
    if kind == "extra_forbidden":
        return f"unknown key{_suggest(loc[-1], _known_keys(loc[:-1]))}"
    if kind == "literal_error":
        expected = problem["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{value!r} is not one of: {expected}"
    if kind == "value_error":
        return str(problem["ctx"]["error"])
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {value!r}"
    if kind in ("string_type",):
        return f"expected text, got {_kind(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_kind(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_kind(value)}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{value!r} is out of range ({problem['msg'].lower()})"
    if kind in ("path_type",):
        return f"expected a path, got {_kind(value)}"
    return problem["msg"]


def _known_keys(loc: list[str]) -> list[str]:
    """The keys accepted at ``loc`` (e.g. ``['gh']``), for 'did you mean' hints."""
    model: Any = VMSettings
    for part in loc:
        if part.isdigit():
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _inner_model(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)
