"""The real deploy, every role, run by pyinfra's CLI on @fake hosts of each distribution."""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from corral import paths
from corral.config import load_inventory
from corral.hostdata import load_versions
from deploy import roles
from deploy.roles import base, common, managed, shell

DEPLOY_FILE = paths.ROOT / "deploy" / "deploy.py"

# VM name -> (image, /etc/os-release ID, VERSION_ID, VERSION_CODENAME, architecture).
DISTROS = {
    "noble": ("ubuntu-24.04", "ubuntu", "24.04", "noble", "amd64"),
    "resolute": ("ubuntu-26.04", "ubuntu", "26.04", "resolute", "amd64"),
    "bookworm": ("debian-12", "debian", "12", "bookworm", "amd64"),
    "trixie": ("debian-13", "debian", "13", "trixie", "amd64"),
}
# Every toolchain from its upstream download, on both architectures corral supports.
TOOLS = {
    "tools-amd64": ("ubuntu-24.04", "ubuntu", "24.04", "noble", "amd64"),
    "tools-arm64": ("ubuntu-26.04", "ubuntu", "26.04", "resolute", "arm64"),
}
# Debian architecture -> the names Go, Rust (target) and OpenCode give it in downloads.
ARCH_NAMES = {
    "amd64": ("amd64", "x86_64-unknown-linux-gnu", "x64"),
    "arm64": ("arm64", "aarch64-unknown-linux-gnu", "arm64"),
}
ALL_DISTROS = {**DISTROS, **TOOLS}
ALL_HOSTS = list(ALL_DISTROS)
UBUNTU = ["noble", "resolute"]
DEBIAN = ["bookworm", "trixie"]

OPENCODE_SUMS = {"amd64": "a" * 64, "arm64": "b" * 64}
TOOLS_SETTINGS = (
    "toolchains: [python, node, go, rust], nodejs: {source: distro}, go: {source: official}, "
    f"rust: {{source: rustup}}, opencode: {{source: release, release_sha256: {OPENCODE_SUMS}}}")
GITHUB_TOKEN = "github_pat_FAKE0000000000000000000000"
MODEL_KEY = "fake-model-key-0123456789"

INVENTORY = """\
defaults:
  provider: incus
  project: {project}
  ca_certs: [{ca}]
  gh: {{source: github}}
  nodejs:
    source: nodesource
    major: 20
    nodesource_url: "https://nodesource.example/node_{{major}}.x"
vms:
  noble: {{image: ubuntu-24.04}}
  resolute: {{image: ubuntu-26.04}}
  bookworm: {{image: debian-12}}
  trixie: {{image: debian-13}}
  tools-amd64: {{image: ubuntu-24.04, {tools}}}
  tools-arm64: {{image: ubuntu-26.04, {tools}}}
"""

# pyinfra's inventory file: the hosts the test prepared, @fake connector and all.
INVENTORY_PY = """\
import json, os
hosts = list(json.load(open(os.environ["FAKE_HOSTS"])).items())
"""

# Runs pyinfra's CLI unchanged, recording in order what each @fake host was asked to run
# (with the user it would run as) and the content of each file it was sent.
DRIVER_PY = """\
import atexit, json, os, sys
from pyinfra.connectors.fake import FakeConnector

events = {}
run = FakeConnector.run_shell_command

def run_shell_command(self, command, *args, **arguments):
    ok, out = run(self, command, *args, **arguments)
    events.setdefault(self.host.name, []).append(
        {"run": self.executed_commands[-1], "sudo": bool(arguments.get("_sudo")),
         "sudo_user": arguments.get("_sudo_user")})
    return ok, out

def put_file(self, source, remote_filename, *args, **arguments):
    text = source.read() if hasattr(source, "read") else open(source).read()
    events.setdefault(self.host.name, []).append({"put": remote_filename, "content": text})
    return True

def dump():
    with open(os.environ["FAKE_RECORD"], "w") as out:
        json.dump(events, out)

FakeConnector.run_shell_command = run_shell_command
FakeConnector.put_file = put_file
atexit.register(dump)

from pyinfra_cli.main import main
sys.argv[0] = "pyinfra"
main()
"""


def _pyinfra_host(module, vm):
    """corral's own pyinfra host for ``vm`` (inventory/inventory.py), reached as a non-root
    SSH user as on a Lima VM, so that the roles run through sudo."""
    _, data = module.pyinfra_host(vm, paths.ROOT / "no-ssh-config", f"@fake/{vm.name}", "corral")
    return data


def _probe_answer(distro, data, installed=None):
    """What the probe prints: a fresh guest (no agent user, nothing installed) or, given
    ``installed`` (the converged values), a guest a first run has brought to the wanted state.
    """
    _, distro_id, version, codename, arch = distro
    now = installed or {}
    lines = [f"distro_id={distro_id}", f"distro_version={version}",
             f"distro_codename={codename}", f"arch={arch}",
             # Ubuntu's images ship needrestart; Debian's do not.
             f"needrestart={'yes' if distro_id == 'ubuntu' else ''}"]
    lines += [f"{key}={now.get(key, '')}" for key in (
        "agent_home", "agent_shell", "keyring_gh", "keyring_nodesource", "go", "uv",
        "opencode_npm", "opencode_release", "rustup", "rust_toolchains", "apt_age")]
    for kind, specs in common.managed_paths(data).items():
        lines += [f"{kind[:-1]}:{spec}={now.get(spec, '')}" for spec in specs]
    return lines


def _converged(distro, data, first, host):
    """The canned answers of the guest ``first`` left behind: every file it was sent, with
    the mode and owner it was given, every link, package, key and pinned version in place."""
    arch = distro[4]
    home = "/home/corral"
    commands = "\n".join(first.commands(host))
    uploads = first.uploads(host)
    now = {"agent_home": home, "agent_shell": "/bin/bash", "apt_age": "60",
           "keyring_gh": data["gh_key_fingerprint"] + ",",
           "keyring_nodesource": data["nodejs_nodesource_key_fingerprint"] + ",",
           "go": f"go{data['go_version']}", "uv": str(data["python_uv_version"]),
           f"opencode_{data['opencode_source']}": str(data["opencode_version"]),
           "rustup": "yes",
           "rust_toolchains": f"{data['rust_toolchain']}-{ARCH_NAMES[arch][1]},"}
    managed_paths = common.managed_paths(data)
    for spec in managed_paths["files"]:
        path = re.escape(spec.replace("~", home, 1))
        found = re.search(rf"^chown (\S+) {path} && chmod (\S+) {path}$", commands, re.M)
        if found:
            digest = hashlib.sha256(uploads[spec.replace("~", home, 1)].encode()).hexdigest()
            now[spec] = f"{digest} {found[2]} {found[1]}"
    for spec in managed_paths["links"]:
        found = re.search(rf"^ln -sfn (\S+) {re.escape(spec)}$", commands, re.M)
        now[spec] = found[1] if found else ""
    for spec in managed_paths["dirs"]:
        path = re.escape(spec.replace("~", home, 1))
        owner = re.search(rf"^mkdir -p {path} && chown (\S+) {path}$", commands, re.M)
        mode = re.search(rf"^chmod (\d+) {path}$", commands, re.M)
        if owner:
            now[spec] = f"{mode[1] if mode else '755'} {owner[1]}"
    packages = sorted({name for names in first.installed(host) for name in names})
    timers = ["apt-daily.timer", "apt-daily-upgrade.timer"]
    return {
        "distro_id=": _probe_answer(distro, data, now),
        "dpkg -l": [f"ii  {name}  1.0-1  {arch}  {name}" for name in packages],
        "--property SubState": [f"{key}={value}" for timer in timers
                                for key, value in (("Id", timer), ("SubState", "waiting"))],
        "--property UnitFileState": [f"{key}={value}" for timer in timers
                                     for key, value in (("Id", timer),
                                                        ("UnitFileState", "enabled"))],
        "CORRAL MANAGED BLOCK": shell.bashrc_block().splitlines(),
    }


@dataclass
class Run:
    """One pyinfra run: its output, exit status, corral's report and what each host saw."""

    output: str
    code: int
    report: dict
    events: dict
    data: dict
    answers: dict

    def commands(self, host, with_user=False):
        found = [e for e in self.events[f"@fake/{host}"] if "run" in e]
        return found if with_user else [e["run"] for e in found]

    def uploads(self, host):
        return {e["put"]: e["content"] for e in self.events[f"@fake/{host}"] if "put" in e}

    def position(self, host, predicate, after=-1):
        """Index of the first event on ``host`` past ``after`` for which ``predicate`` holds."""
        for index, event in enumerate(self.events[f"@fake/{host}"]):
            if index > after and predicate(event):
                return index
        raise AssertionError(f"{host}: no such event")

    def installed(self, host):
        """The packages each non-interactive apt-get install was asked for."""
        return [c.removeprefix(managed.APT_INSTALL).split() for c in self.commands(host)
                if c.startswith(managed.APT_INSTALL)]


def _deploy(folder, data, answers):
    """Run pyinfra's CLI once on every host, each answering with its canned ``answers``."""
    hosts = {f"@fake/{name}": {**data[name], "fake_responses": answers[name],
                               "fake_delay": 0, "fake_delay_jitter": 0} for name in data}
    (folder / "hosts.json").write_text(json.dumps(hosts))
    (folder / "inventory.py").write_text(INVENTORY_PY)
    (folder / "driver.py").write_text(DRIVER_PY)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "PYINFRA_"))}
    env.update({
        "FAKE_HOSTS": str(folder / "hosts.json"),
        "FAKE_RECORD": str(folder / "events.json"),
        "CORRAL_REPORT": str(folder / "report.json"),
        "CORRAL_CONFIG_DIR": str(folder / "config"),
        "CORRAL_STATE_DIR": str(folder / "state"),
        "GH_TOKEN": GITHUB_TOKEN,
        "AZURE_OPENAI_API_KEY": MODEL_KEY,
    })
    result = subprocess.run(
        [sys.executable, str(folder / "driver.py"), "--yes", str(folder / "inventory.py"),
         str(DEPLOY_FILE)],
        cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert (folder / "report.json").exists(), output
    return Run(output=output, code=result.returncode, answers=answers,
               report=json.loads((folder / "report.json").read_text()),
               events=json.loads((folder / "events.json").read_text()), data=data)


@pytest.fixture(scope="module")
def host_data(tmp_path_factory):
    """The pyinfra host data of every VM of a throw-away corral inventory."""
    folder = tmp_path_factory.mktemp("fake-inventory")
    (folder / "project").mkdir()
    ca = folder / "proxy.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIFAKE\n-----END CERTIFICATE-----\n")
    (folder / "vms.yaml").write_text(INVENTORY.format(
        project=folder / "project", ca=ca, tools=TOOLS_SETTINGS))
    inventory = load_inventory(folder / "vms.yaml")
    spec = importlib.util.spec_from_file_location(
        "corral_inventory_file", paths.ROOT / "inventory" / "inventory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    data = {}
    for name in ALL_HOSTS:
        data[name] = _pyinfra_host(module, inventory.vms[name])
        assert roles.preflight(data[name], roles.selected(data[name])) == []
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory, host_data):
    """Every VM deployed on a fresh guest, all in one run of `python -m pyinfra`."""
    answers = {name: {"distro_id=": _probe_answer(ALL_DISTROS[name], host_data[name]),
                      "dpkg -l": []} for name in host_data}
    return _deploy(tmp_path_factory.mktemp("fake-deploy"), host_data, answers)


@pytest.fixture(scope="module")
def converged(tmp_path_factory, host_data, run):
    """Every VM deployed again, on the guest the first run left behind."""
    answers = {name: _converged(ALL_DISTROS[name], host_data[name], run, name)
               for name in host_data}
    return _deploy(tmp_path_factory.mktemp("fake-converged"), host_data, answers)


def test_one_pyinfra_run_provisions_vms_that_get_different_roles(run):
    # Roles share lines of deploy.py; pyinfra must still tell their operations apart.
    assert roles.selected(run.data["noble"]) != roles.selected(run.data["tools-amd64"])
    assert run.code == 0, run.output
    assert "Cycle detected" not in run.output


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_the_whole_deploy_completes_with_no_failed_operation(run, host):
    entry = run.report[f"@fake/{host}"]
    assert entry["failed"] is False
    assert [op for op in entry["ops"] if op["status"] != "changed"] == []
    ran = {op["name"].split(" | ")[0] for op in entry["ops"]}
    assert ran == set(roles.selected(run.data[host]))


@pytest.mark.parametrize("host, expected", [
    ("noble", ["origin=Ubuntu,archive=noble-security",
               "origin=UbuntuESMApps,archive=noble-apps-security",
               "origin=UbuntuESM,archive=noble-infra-security"]),
    ("resolute", ["origin=Ubuntu,archive=resolute-security",
                  "origin=UbuntuESMApps,archive=resolute-apps-security",
                  "origin=UbuntuESM,archive=resolute-infra-security"]),
    ("bookworm", ["origin=Debian,codename=bookworm-security,label=Debian-Security"]),
    ("trixie", ["origin=Debian,codename=trixie-security,label=Debian-Security"]),
])
def test_unattended_upgrades_take_only_the_distributions_security_origins(run, host, expected):
    text = run.uploads(host)["/etc/apt/apt.conf.d/52corral-unattended-upgrades"]
    block = text.split("Unattended-Upgrade::Origins-Pattern {")[1].split("};")[0]
    assert re.findall(r'"([^"]+)";', block) == expected
    assert text.index("#clear Unattended-Upgrade::Allowed-Origins;") < text.index(block)
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in text
    assert 'APT::Periodic::Unattended-Upgrade "1";' in run.uploads(host)[
        "/etc/apt/apt.conf.d/20auto-upgrades"]


@pytest.mark.parametrize("host", DISTROS)
def test_unattended_upgrades_timers_are_started_and_enabled(run, host):
    commands = run.commands(host)
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert f"systemctl start {timer}" in commands
        assert f"systemctl enable {timer}" in commands
    assert ["unattended-upgrades"] in run.installed(host)


@pytest.mark.parametrize("host", DISTROS)
def test_github_cli_source_is_signed_by_the_pinned_keyring_whatever_the_codename(run, host):
    gh = load_versions()["gh"]
    source = run.uploads(host)["/etc/apt/sources.list.d/github-cli.list"]
    assert source == ("deb [arch=amd64 signed-by=/etc/apt/keyrings/githubcli-archive-keyring"
                      f".gpg] {gh['repo_url']} stable main\n")
    keyring = next(c for c in run.commands(host) if gh["key_url"] in c)
    assert f"--list-keys --with-colons {gh['key_fingerprint']}" in keyring
    assert "/etc/apt/keyrings/githubcli-archive-keyring.gpg" in keyring


@pytest.mark.parametrize("host", DISTROS)
def test_github_cli_is_installed_after_its_repository_is_known_to_apt(run, host):
    listed = run.position(host, lambda e: e.get("put", "").endswith("github-cli.list"))
    updated = run.position(host, lambda e: e.get("run") == "apt-get update", after=listed)
    installed = run.position(host, lambda e: e.get("run", "").endswith(" gh"))
    assert listed < updated < installed


@pytest.mark.parametrize("host", DISTROS)
def test_nodesource_repository_is_pinned_to_the_inventorys_major(run, host):
    uploads = run.uploads(host)
    assert uploads["/etc/apt/sources.list.d/nodesource.list"] == (
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/nodesource.gpg] "
        "https://nodesource.example/node_20.x nodistro main\n")
    preferences = uploads["/etc/apt/preferences.d/nodesource"]
    assert "Package: nodejs\nPin: origin nodesource.example\nPin-Priority: 600\n" in preferences
    fingerprint = load_versions()["nodejs"]["nodesource_key_fingerprint"]
    assert any(f"--list-keys --with-colons {fingerprint}" in c for c in run.commands(host))
    # NodeSource's nodejs carries npm; the distribution's npm would conflict with it.
    assert ["nodejs"] in run.installed(host)
    assert not any("npm" in names for names in run.installed(host))


@pytest.mark.parametrize("host", DISTROS)
def test_base_packages_come_in_one_noninteractive_install(run, host):
    assert sorted(base.BASE_PACKAGES) in run.installed(host)
    assert "ln -sfn /usr/bin/fdfind /usr/local/bin/fd" in run.commands(host)
    assert 'DPkg::Lock::Timeout "300";' in run.uploads(host)["/etc/apt/apt.conf.d/90corral"]


@pytest.mark.parametrize("host", UBUNTU)
def test_ubuntus_needrestart_restarts_services_without_asking(run, host):
    text = run.uploads(host)["/etc/needrestart/conf.d/90-corral.conf"]
    assert "$nrconf{restart} = 'a';" in text


@pytest.mark.parametrize("host", DEBIAN)
def test_no_needrestart_config_where_needrestart_is_absent(run, host):
    assert "/etc/needrestart/conf.d/90-corral.conf" not in run.uploads(host)


@pytest.mark.parametrize("host", DISTROS)
def test_the_hosts_ca_is_trusted_before_anything_is_downloaded(run, host):
    dest = "/usr/local/share/ca-certificates/corral-proxy.crt"
    assert "MIIFAKE" in run.uploads(host)[dest]
    trusted = run.position(host, lambda e: e.get("run") == "update-ca-certificates")
    first_download = run.position(host, lambda e: "curl " in e.get("run", "")
                                  or e.get("run") == "apt-get update")
    assert run.position(host, lambda e: e.get("put") == dest) < trusted < first_download


@pytest.mark.parametrize("host", DISTROS)
def test_a_missing_agent_user_is_created_with_bash(run, host):
    assert "useradd -d /home/corral -s /bin/bash -m corral" in run.commands(host)


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_the_probe_alone_answers_for_every_managed_path(run, host):
    # A path a role manages but does not list in probed_paths costs pyinfra fact round trips.
    managed = common.managed_paths(run.data[host])
    absolute = {p.replace("~/", "/home/corral/", 1)
                for kind in managed.values() for p in kind}
    asked = [c for c in run.commands(host) if "stat -c 'user=%U" in c]
    assert [c for c in asked if any(f"test -e {p} " in c for p in absolute)] == []
    assert sum("distro_id=" in c for c in run.commands(host)) == 1


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_every_command_runs_through_sudo_as_on_a_lima_vm(run, host):
    # Only the upload staging folder is the SSH user's own.
    own = [e["run"] for e in run.commands(host, with_user=True) if not e["sudo"]]
    assert own == ["mkdir -p -m 0700 .cache/corral-upload"]


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_secrets_reach_only_the_private_file_never_a_command_or_the_output(run, host):
    secrets = run.uploads(host)["/home/corral/.config/corral/secrets.env"]
    assert f"export GH_TOKEN='{GITHUB_TOKEN}'" in secrets
    assert f"export AZURE_OPENAI_API_KEY='{MODEL_KEY}'" in secrets
    assert "chmod 600 /home/corral/.config/corral/secrets.env" in " ".join(run.commands(host))
    for value in (GITHUB_TOKEN, MODEL_KEY):
        assert value not in run.output
        assert not any(value in c for c in run.commands(host))
        assert not any(value in text for path, text in run.uploads(host).items()
                       if not path.endswith("secrets.env"))


@pytest.mark.parametrize("host", DISTROS)
def test_opencode_comes_from_npm_at_its_pin_and_reads_the_key_from_the_environment(run, host):
    version = load_versions()["opencode"]["version"]
    assert any(c.endswith(f"npm install --global --prefix /usr/local --no-audit --no-fund "
                          f"opencode-ai@{version}") for c in run.commands(host))
    config = json.loads(run.uploads(host)["/home/corral/.config/opencode/opencode.json"])
    assert config["provider"]["azure"]["options"]["apiKey"] == "{env:AZURE_OPENAI_API_KEY}"
    assert config["autoupdate"] is False


@pytest.mark.parametrize("host", TOOLS)
def test_go_comes_from_the_pinned_tarball_for_the_guests_architecture(run, host):
    arch = TOOLS[host][4]
    go_arch = ARCH_NAMES[arch][0]
    go = load_versions()["go"]
    url = f"{go['url']}/go{go['version']}.linux-{go_arch}.tar.gz"
    download = next(c for c in run.commands(host) if url in c)
    assert f"!= {go['sha256'][arch]} ]" in download
    assert "ln -sfn /usr/local/go/bin/go /usr/local/bin/go" in run.commands(host)
    assert "ln -sfn /usr/local/go/bin/gofmt /usr/local/bin/gofmt" in run.commands(host)


@pytest.mark.parametrize("host", TOOLS)
def test_rustup_init_is_checked_then_run_as_the_agent(run, host):
    arch = TOOLS[host][4]
    target = ARCH_NAMES[arch][1]
    rust = load_versions()["rust"]
    url = f"{rust['rustup_url']}/{rust['rustup_version']}/{target}/rustup-init"
    download = next(e for e in run.commands(host, with_user=True) if url in e["run"])
    assert f"!= {rust['rustup_sha256'][arch]} ]" in download["run"]
    assert download["sudo_user"] is None
    init = next(e for e in run.commands(host, with_user=True)
                if "--default-toolchain" in e["run"])
    assert init["sudo_user"] == "corral"
    assert init["run"] == (f"RUSTUP_DIST_SERVER={rust['dist_server']} "
                           f"/var/cache/corral/rustup-init-{rust['rustup_version']} -y "
                           f"--no-modify-path --profile minimal "
                           f"--default-toolchain {rust['toolchain']}")


@pytest.mark.parametrize("host", TOOLS)
def test_opencode_release_is_the_checked_tarball_for_the_guests_architecture(run, host):
    arch = TOOLS[host][4]
    opencode_arch = ARCH_NAMES[arch][2]
    opencode = load_versions()["opencode"]
    url = (f"{opencode['release_url']}/v{opencode['version']}/"
           f"opencode-linux-{opencode_arch}.tar.gz")
    download = next(c for c in run.commands(host) if url in c)
    assert f"!= {OPENCODE_SUMS[arch]} ]" in download
    assert not any("npm install" in c for c in run.commands(host))


@pytest.mark.parametrize("host", TOOLS)
def test_apt_sources_name_the_guests_architecture(run, host):
    arch = TOOLS[host][4]
    source = run.uploads(host)["/etc/apt/sources.list.d/github-cli.list"]
    assert source.startswith(f"deb [arch={arch} signed-by=")


@pytest.mark.parametrize("host", TOOLS)
def test_toolchains_from_the_distribution_and_the_path_to_the_downloaded_ones(run, host):
    assert ["nodejs", "npm"] in run.installed(host)
    assert ["python3", "python3-venv", "python3-dev"] in run.installed(host)
    assert "/etc/apt/sources.list.d/nodesource.list" not in run.uploads(host)
    uv = load_versions()["python"]["uv_version"]
    assert any(c.endswith(f"pip install --quiet uv=={uv}") for c in run.commands(host))
    profile = run.uploads(host)["/etc/profile.d/corral.sh"]
    for entry in ("$HOME/.local/bin", "/usr/local/go/bin", "$HOME/go/bin", "$HOME/.cargo/bin"):
        assert f'PATH="$PATH:{entry}"' in profile


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_a_second_run_on_the_converged_guest_changes_nothing(converged, host):
    entry = converged.report[f"@fake/{host}"]
    assert entry["failed"] is False
    assert {op["name"].split(" | ")[0] for op in entry["ops"]} == set(
        roles.selected(converged.data[host]))
    assert [op["name"] for op in entry["ops"] if op["status"] != "unchanged"] == []
    assert converged.uploads(host) == {}


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_a_second_run_only_asks_questions_it_was_answered(converged, host):
    matchers = converged.answers[host]
    assert [c for c in converged.commands(host) if not any(m in c for m in matchers)] == []
    assert sum("distro_id=" in c for c in converged.commands(host)) == 1
