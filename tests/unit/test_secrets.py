"""Secrets: where they are read from, which tokens are accepted, and that they stay hidden."""

import pytest

from corral import secrets
from corral.errors import SecretError

FINE = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
CLASSIC = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"


def _file(tmp_path, text, mode=0o600):
    path = tmp_path / "secrets.env"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_environment_wins_over_the_file(tmp_path):
    path = _file(tmp_path, "GH_TOKEN=from-file\nMODEL_KEY=k\n")
    found = secrets.read(["GH_TOKEN", "MODEL_KEY"], environ={"GH_TOKEN": "from-env"},
                         path=path)
    assert found == {"GH_TOKEN": "from-env", "MODEL_KEY": "k"}


def test_missing_secrets_are_left_out(tmp_path):
    assert secrets.read(["GH_TOKEN"], environ={}, path=tmp_path / "absent.env") == {}


def test_refuses_a_secrets_file_others_can_read(tmp_path):
    path = _file(tmp_path, "GH_TOKEN=x\n", mode=0o644)
    with pytest.raises(SecretError, match=r"mode 0644.*chmod 600"):
        secrets.read(["GH_TOKEN"], environ={}, path=path)


def test_refuses_a_secrets_file_inside_the_shared_project(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    path = _file(project, "GH_TOKEN=x\n")
    with pytest.raises(SecretError, match="inside the project shared with the VM"):
        secrets.read(["GH_TOKEN"], environ={}, path=path, project=project)


def test_the_file_is_not_read_when_the_environment_has_everything(tmp_path):
    path = _file(tmp_path, "GH_TOKEN=x\n", mode=0o644)
    assert secrets.read(["GH_TOKEN"], environ={"GH_TOKEN": "y"}, path=path) == {"GH_TOKEN": "y"}


def test_parse_accepts_export_quotes_and_comments():
    text = "# mine\nexport GH_TOKEN='a b'\nKEY=\"c\"\n\nPLAIN=d\n"
    assert secrets.parse(text) == {"GH_TOKEN": "a b", "KEY": "c", "PLAIN": "d"}


def test_a_malformed_line_is_named_by_number_never_by_content():
    with pytest.raises(SecretError) as err:
        secrets.parse("GH_TOKEN=x\nsupersecretvalue\n")
    assert "line 2" in str(err.value) and "supersecretvalue" not in str(err.value)


def test_accepts_a_fine_grained_token():
    secrets.check_github_token(FINE)


def test_refuses_a_classic_token_unless_allowed():
    with pytest.raises(SecretError, match="allow_classic_token") as err:
        secrets.check_github_token(CLASSIC)
    assert CLASSIC not in str(err.value)
    secrets.check_github_token(CLASSIC, allow_classic=True)


def test_refuses_something_that_is_not_a_github_token():
    with pytest.raises(SecretError, match="not a fine-grained GitHub token"):
        secrets.check_github_token("hunter2")


def test_for_vm_reads_the_configured_model_key_and_checks_the_token(tmp_path):
    data = {"credentials_model_key_env": "OPENAI_KEY", "gh_allow_classic_token": False,
            "project": str(tmp_path)}
    found = secrets.for_vm(data, environ={"GH_TOKEN": FINE, "OPENAI_KEY": "k"},
                           path=tmp_path / "none.env")
    assert found == {"GH_TOKEN": FINE, "OPENAI_KEY": "k"}
    with pytest.raises(SecretError):
        secrets.for_vm(data, environ={"GH_TOKEN": CLASSIC}, path=tmp_path / "none.env")


def test_mask_hides_every_secret_value():
    line = f"token {FINE} and key k3y"
    assert secrets.mask(line, {"GH_TOKEN": FINE, "KEY": "k3y"}) == "token *** and key ***"


def test_env_file_exports_each_secret_once_in_order():
    assert secrets.env_file({"B": "2", "A": "1"}) == "export A='1'\nexport B='2'\n"


def test_env_file_refuses_a_value_that_would_break_the_quoting():
    with pytest.raises(SecretError, match="B: contains a quote") as err:
        secrets.env_file({"B": "it's"})
    assert "it's" not in str(err.value)
