"""The inventory: defaults, merging, and one clear line for every kind of bad input."""

import textwrap
from pathlib import Path

import pytest

from corral import paths
from corral.config import load_inventory, size_bytes
from corral.errors import ConfigError, MachineNotFound


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    return folder


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vms.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, cwd: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_inventory(path, cwd=cwd)
    return caught.value.problems


def only_problem(path: Path, cwd: Path | None = None) -> str:
    found = problems(path, cwd)
    assert len(found) == 1, found
    return found[0]


def test_shipped_inventory_is_valid_and_defines_agent(project):
    inventory = load_inventory(paths.DEFAULT_INVENTORY, cwd=project)
    assert list(inventory.vms) == ["agent"]
    vm = inventory.vms["agent"]
    assert vm.project == project.resolve()
    assert vm.mount_point == "/work/app"
    assert vm.settings.mount == "writable"


def test_vm_entry_overrides_defaults_key_by_key(tmp_path, project):
    path = write(tmp_path, f"""
        defaults:
          cpus: 2
          project: {project}
          gh: {{source: distro, allow_classic_token: true}}
        vms:
          web:
            cpus: 6
            gh: {{source: github}}
    """)
    vm = load_inventory(path).vms["web"]
    assert vm.settings.cpus == 6
    assert vm.settings.gh.source == "github"
    assert vm.settings.gh.allow_classic_token is True
    assert vm.role_data()["gh_source"] == "github"


def test_relative_project_is_resolved_against_the_inventory_folder(tmp_path, project):
    path = write(tmp_path, "vms:\n  web: {project: app, mount_point: /work/code}\n")
    vm = load_inventory(path).vms["web"]
    assert vm.project == project.resolve()
    assert vm.mount_point == "/work/code"


def test_reports_bad_size_like_a_compiler(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, memory: 8GB}}\n")
    assert only_problem(path).endswith(
        "vms.yaml: vms.web.memory: '8GB' is not a size (use e.g. 8GiB)"
    )


def test_blames_defaults_when_the_bad_value_comes_from_there(tmp_path, project):
    path = write(tmp_path, f"defaults: {{disk: lots}}\nvms:\n  web: {{project: {project}}}\n")
    assert "vms.yaml: defaults.disk: 'lots' is not a size" in only_problem(path)


def test_suggests_the_closest_key_for_an_unknown_one(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, memroy: 8GiB}}\n")
    assert "vms.web.memroy: unknown key (did you mean 'memory'?)" in only_problem(path)


def test_suggests_keys_inside_role_sections(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, gh: {{sorce: distro}}}}\n")
    assert "vms.web.gh.sorce: unknown key (did you mean 'source'?)" in only_problem(path)


def test_reports_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "default: {}\nvms: {web: {}}\n")
    assert "default: unknown key (did you mean 'defaults'?)" in only_problem(path)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("cpus: four", "vms.web.cpus: expected a whole number, got 'four'"),
        ("cpus: 0", "vms.web.cpus: 0 is out of range"),
        ("image: debian-11", "vms.web.image: 'debian-11' is not one of: debian-13"),
        ("mount: rw", "vms.web.mount: 'rw' is not one of: writable, readonly, none"),
        ("toolchains: python", "vms.web.toolchains: expected a list, got 'python'"),
        ("toolchains: [java]", "vms.web.toolchains.0: 'java' is not one of"),
        ("toolchains: [go, go]", "vms.web.toolchains: go listed more than once"),
        ("gh: distro", "vms.web.gh: expected a mapping of keys, got 'distro'"),
        ("gh: {allow_classic_token: maybe}", "vms.web.gh.allow_classic_token: expected true"),
        ("port_forwards: [{guest: 80}]", "vms.web.port_forwards.0.host: required key"),
    ],
)
def test_reports_wrong_types_and_values(tmp_path, project, entry, expected):
    path = write(tmp_path, f"vms:\n  web:\n    project: {project}\n    {entry}\n")
    assert expected in only_problem(path)


def test_reports_every_problem_not_only_the_first(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, cpus: x, memory: 1GB}}\n")
    assert len(problems(path)) == 2


@pytest.mark.parametrize("name", ["9lives", "web.app", "-web", "web-", "a" * 60, "wéb"])
def test_refuses_names_lima_would_refuse(tmp_path, project, name):
    path = write(tmp_path, f"vms:\n  '{name}': {{project: {project}}}\n")
    assert "is not a usable VM name" in only_problem(path)


def test_refuses_names_that_collide_once_normalised(tmp_path, project):
    path = write(tmp_path, f"defaults: {{project: {project}}}\nvms: {{my_vm: {{}}, My-VM: {{}}}}\n")
    assert "vms.My-VM: same name as 'my_vm' once normalised" in only_problem(path)


def test_normalises_names_to_lower_case(tmp_path, project):
    path = write(tmp_path, f"vms:\n  Web_App: {{project: {project}}}\n")
    assert list(load_inventory(path).vms) == ["web-app"]


def test_refuses_a_project_that_does_not_exist(tmp_path):
    path = write(tmp_path, f"vms:\n  web: {{project: {tmp_path / 'missing'}}}\n")
    assert "vms.web.project:" in only_problem(path)
    assert "does not exist" in only_problem(path)


def test_refuses_root_as_project(tmp_path):
    path = write(tmp_path, "vms:\n  web: {project: /}\n")
    assert "'/' would share the whole host" in only_problem(path)


def test_refuses_home_directory_as_project(tmp_path, monkeypatch):
    home = tmp_path / "home" / "dev"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    path = write(tmp_path, f"vms:\n  web: {{project: {home}}}\n")
    assert "contains your home folder" in only_problem(path)


def test_refuses_a_parent_of_the_home_directory_as_project(tmp_path, monkeypatch):
    home = tmp_path / "home" / "dev"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    path = write(tmp_path, f"vms:\n  web: {{project: {home.parent}}}\n")
    assert "contains your home folder" in only_problem(path)


def test_refuses_home_when_it_is_the_default_project(tmp_path, monkeypatch):
    home = tmp_path / "home" / "dev"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    path = write(tmp_path, "vms:\n  web: {}\n")
    found = only_problem(path, cwd=home)
    assert "project defaults to the current directory" in found
    assert "contains your home folder" in found


def test_accepts_a_project_below_the_home_directory(tmp_path, monkeypatch):
    home = tmp_path / "home" / "dev"
    (home / "src" / "app").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    path = write(tmp_path, f"vms:\n  web: {{project: {home / 'src' / 'app'}}}\n")
    assert load_inventory(path).vms["web"].mount_point == "/work/app"


@pytest.mark.parametrize(
    ("mount_point", "expected"),
    [
        ("/", "system folder Lima refuses"),
        ("/home", "system folder Lima refuses"),
        ("/tmp/", "system folder Lima refuses"),
        ("~/work", "starts with '~'"),
        ("work/app", "not an absolute path"),
        ("/work/../etc", "contains '..'"),
    ],
)
def test_refuses_mount_points_lima_forbids(tmp_path, project, mount_point, expected):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, mount_point: '{mount_point}'}}\n")
    found = only_problem(path)
    assert "vms.web.mount_point:" in found
    assert expected in found


def test_refuses_the_guest_home_as_mount_point(tmp_path, project, monkeypatch):
    monkeypatch.setattr("corral.config._host_user", lambda: "dev")
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, mount_point: /home/dev.linux}}\n")
    assert "the guest's home folder" in only_problem(path)


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_accepts_ca_certs_by_path_and_glob(tmp_path, project):
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "a.crt").write_text(PEM)
    (certs / "b.crt").write_text(PEM)
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, ca_certs: ['certs/*.crt']}}\n")
    vm = load_inventory(path).vms["web"]
    assert [c.name for c in vm.ca_certs] == ["a.crt", "b.crt"]


def test_refuses_a_missing_ca_cert(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, ca_certs: [nope.crt]}}\n")
    found = only_problem(path)
    assert "vms.web.ca_certs:" in found
    assert "nope.crt' does not exist" in found


def test_refuses_a_glob_matching_no_ca_cert(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, ca_certs: ['x/*.crt']}}\n")
    assert "matches no file" in only_problem(path)


def test_refuses_a_ca_cert_that_is_not_pem(tmp_path, project):
    (tmp_path / "key.der").write_bytes(b"\x30\x82\x01\x0a")
    path = write(tmp_path, f"vms:\n  web: {{project: {project}, ca_certs: [key.der]}}\n")
    assert "is not a PEM certificate" in only_problem(path)


def test_reports_malformed_yaml_with_line_and_column(tmp_path):
    path = write(tmp_path, "vms:\n  web: {cpus: 2\n  other: {}\n")
    found = only_problem(path)
    assert "vms.yaml:3:" in found
    assert "malformed YAML" in found


def test_reports_a_key_given_twice(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}}}\n  web: {{}}\n")
    found = only_problem(path)
    assert "vms.yaml:3:3: malformed YAML: key 'web' given twice" in found


def test_accepts_yaml_anchors_and_merge_keys(tmp_path, project):
    path = write(tmp_path, f"""
        vms:
          web: &web {{project: {project}, cpus: 2}}
          api:
            <<: *web
            cpus: 6
    """)
    vms = load_inventory(path).vms
    assert (vms["web"].settings.cpus, vms["api"].settings.cpus) == (2, 6)
    assert vms["api"].project == project.resolve()


def test_reports_an_empty_file(tmp_path):
    path = write(tmp_path, "# nothing yet\n")
    assert "the file is empty" in only_problem(path)


def test_reports_a_file_without_vms(tmp_path):
    path = write(tmp_path, "defaults: {cpus: 2}\n")
    assert "vms: expected a mapping with at least one VM" in only_problem(path)


def test_reports_a_missing_inventory_file(tmp_path):
    assert "no such inventory file" in only_problem(tmp_path / "absent.yaml")


def test_select_names_an_unknown_vm_and_the_known_ones(tmp_path, project):
    path = write(tmp_path, f"vms:\n  web: {{project: {project}}}\n")
    with pytest.raises(MachineNotFound, match=r"no VM named 'db' \(known: web\)"):
        load_inventory(path).select("db")


def test_size_bytes_reads_binary_units():
    assert size_bytes("8GiB") == 8 * 2**30
    assert size_bytes("512MiB") == 512 * 2**20
