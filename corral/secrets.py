"""The GitHub token and model key, read on the host and checked before they reach a VM."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from corral import paths
from corral.errors import SecretError

log = logging.getLogger(__name__)

GITHUB_TOKEN_ENV = "GH_TOKEN"
FINE_GRAINED_PREFIX = "github_pat_"
CLASSIC_PREFIX = "ghp_"
MASK = "***"


def secrets_file() -> Path:
    """``secrets.env`` in corral's config folder (``~/.config/corral/secrets.env``)."""
    return paths.config_dir() / "secrets.env"


def read(
    names: list[str],
    *,
    project: Path | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> dict[str, str]:
    """The secrets named in ``names`` that are set, from the environment or ``secrets.env``.

    + names: variable names, e.g. ``["GH_TOKEN", "AZURE_OPENAI_API_KEY"]``
    + project: the folder shared with the VM; a secrets file inside it is refused
    + environ: the environment to read first (default: ``os.environ``)
    + path: the secrets file (default: :func:`secrets_file`)

    The environment wins over the file. The file is read only when a name is missing
    from the environment, and refused unless only its owner can read it (mode 0600).
    """
    environ = os.environ if environ is None else environ
    found = {name: environ[name] for name in names if environ.get(name)}
    missing = [name for name in names if name not in found]
    path = path or secrets_file()
    if missing and path.exists():
        from_file = parse(_read_safely(path, project))
        found.update({name: from_file[name] for name in missing if from_file.get(name)})
    log.debug("secrets found: %s", ", ".join(sorted(found)) or "none")
    return found


def for_vm(data: Mapping, *, environ: Mapping[str, str] | None = None,
           path: Path | None = None) -> dict[str, str]:
    """The secrets a VM gets, read on the host and checked: ``{"GH_TOKEN": ..., KEY: ...}``.

    + data: the VM's host data (``credentials_model_key_env``, ``gh_allow_classic_token``,
      ``project``)
    + environ, path: as for :func:`read`

    Raises :class:`SecretError` for a GitHub token that is not fine-grained.
    """
    names = [GITHUB_TOKEN_ENV, data.get("credentials_model_key_env") or "AZURE_OPENAI_API_KEY"]
    project = Path(data["project"]) if data.get("project") else None
    found = read(names, project=project, environ=environ, path=path)
    if found.get(GITHUB_TOKEN_ENV):
        check_github_token(found[GITHUB_TOKEN_ENV],
                           allow_classic=bool(data.get("gh_allow_classic_token")))
    return found


def _read_safely(path: Path, project: Path | None) -> str:
    """The text of a secrets file, after checking where it is and who may read it."""
    resolved = path.resolve()
    if project is not None:
        shared = project.resolve()
        if resolved == shared or shared in resolved.parents:
            raise SecretError(
                f"{path}: inside the project shared with the VM ({shared}); move it to "
                f"{paths.config_dir()}/secrets.env"
            )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(
            f"{path}: readable by others (mode {mode:04o}); fix it with: chmod 600 {path}"
        )
    return path.read_text(encoding="utf-8")


def parse(text: str) -> dict[str, str]:
    """``NAME=value`` lines (``export`` and quotes allowed, ``#`` comments) as a dict.

    >>> parse("export GH_TOKEN='github_pat_x'\\n# note\\n")
    {'GH_TOKEN': 'github_pat_x'}
    """
    values = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            # The line may hold a secret: name its number, never its text.
            raise SecretError(f"secrets.env: line {number} is not NAME=value (fix or delete it)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def check_github_token(token: str, *, allow_classic: bool = False) -> None:
    """Refuse a GitHub token that is not fine-grained (classic only when allowed).

    + token: the value of ``GH_TOKEN``
    + allow_classic: accept ``ghp_`` tokens (inventory key ``gh_allow_classic_token``)
    """
    if token.startswith(FINE_GRAINED_PREFIX):
        return
    if token.startswith(CLASSIC_PREFIX):
        if allow_classic:
            return
        raise SecretError(
            f"{GITHUB_TOKEN_ENV}: a classic token (ghp_...) can reach every repository you "
            "can; create a fine-grained read-only token with an expiry (github_pat_...), or "
            "set gh.allow_classic_token: true"
        )
    raise SecretError(
        f"{GITHUB_TOKEN_ENV}: not a fine-grained GitHub token (expected github_pat_...); "
        "create one with read-only access and an expiry"
    )


def mask(text: str, secrets: Mapping[str, str] | list[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def env_file(secrets: Mapping[str, str]) -> str:
    """The guest's secrets file: one ``export NAME='value'`` line per secret, sorted."""
    lines = []
    for name in sorted(secrets):
        value = secrets[name]
        if "'" in value or "\n" in value:
            raise SecretError(f"{name}: contains a quote or a line break; it cannot be a token")
        lines.append(f"export {name}='{value}'")
    return "\n".join(lines) + "\n"
