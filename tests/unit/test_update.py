"""vm.update on one VM and over an inventory, with a recorded guest in place of SSH."""

import json
import os
from pathlib import Path

import pytest

from corral import output, update
from corral.config import load_inventory
from corral.hostdata import host_data
from corral.providers.base import RUNNING, STOPPED, Machine
from corral.update import steps, task
from corral.update.guest import StepFailed, refresh_script
from corral.update.report import EXIT_FAILED, EXIT_OK, EXIT_REBOOT, Change, VMReport, exit_code
from corral.update.tools import TOOLS

from .test_update_parsing import POLICY

BEFORE_DPKG = ("zstd\t1.5.7+dfsg-1\tii \tamd64\n"
               "libzstd1\t1.5.7+dfsg-1\tii \tamd64\n"
               "tzdata\t2025b-4\tii \tall\n"
               "gh\t2.80.0\tii \tamd64\n"
               "bash\t5.2.37-2+b10\tii \tamd64\n")
PENDING = (
    "Inst zstd [1.5.7+dfsg-1] (1.5.7+dfsg-1+deb13u1 Debian-Security:13/stable-security "
    "[amd64])\n"
    "Inst libzstd1 [1.5.7+dfsg-1] (1.5.7+dfsg-1+deb13u1 Debian-Security:13/stable-security "
    "[amd64])\n"
    "Inst tzdata [2025b-4] (2025c-0+deb13u1 Debian:13-updates/stable-updates [all])\n"
)
AFTER_DPKG = BEFORE_DPKG.replace("1.5.7+dfsg-1\t", "1.5.7+dfsg-1+deb13u1\t")
LEFT = "Inst tzdata [2025b-4] (2025c-0+deb13u1 Debian:13-updates/stable-updates [all])\n"


def state(dpkg: str, simulation: str, reboot: str = "reboot=no\n") -> str:
    return (f"@@dpkg\n{dpkg}@@os\ndebian\ntrixie\n@@releases\n{POLICY}"
            f"@@simulation\n{simulation}@@reboot\n{reboot}")


def probe(opencode: str = "1.18.33", uv: str = "0.13.9") -> str:
    return (f"distro_id=debian\ndistro_codename=trixie\narch=amd64\nagent_home=/home/corral\n"
            f"go=\nuv={uv}\nopencode_npm={opencode}\nopencode_release=\n")


class RecordedGuest:
    """Answers each step with the next recorded output and keeps the scripts it was sent."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.scripts: list[tuple[str, str]] = []

    def run(self, script: str, step: str, timeout: float = 0) -> str:
        self.scripts.append((step, script))
        if step not in self.answers or not self.answers[step]:
            raise AssertionError(f"unexpected step {step!r}")
        answer = self.answers[step].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def script(self, step: str) -> str:
        return next(script for name, script in self.scripts if name == step)


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_STATE_DIR", str(tmp_path / "state"))

    def make(text: str = "vms: {agent: {}}\n"):
        (tmp_path / "project").mkdir(exist_ok=True)
        path = tmp_path / "vms.yaml"
        path.write_text(text)
        return load_inventory(path, cwd=tmp_path / "project")

    return make


def no_provision(vm, roles):
    raise AssertionError(f"no role should run, got {roles}")


def test_applies_security_updates_and_leaves_the_rest_to_the_policy(inventory):
    vm = inventory().vms["agent"]
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(BEFORE_DPKG, PENDING), state(AFTER_DPKG, LEFT)],
        "applying security updates": [""],
        "reading tool versions": [probe()],
    })

    report = steps.update_vm(vm, guest, no_provision)

    assert "install --only-upgrade zstd libzstd1\n" in guest.script("applying security updates")
    assert "DPkg::Lock::Timeout=300" in guest.script("applying security updates")
    assert [(c.name, c.old, c.new, c.reason) for c in report.upgraded] == [
        ("libzstd1", "1.5.7+dfsg-1", "1.5.7+dfsg-1+deb13u1", "security"),
        ("zstd", "1.5.7+dfsg-1", "1.5.7+dfsg-1+deb13u1", "security"),
    ]
    assert [c.name for c in report.pending] == ["tzdata"]
    assert report.status == "updated"
    assert not report.reboot_required


def test_policy_all_applies_every_update(inventory):
    vm = inventory("vms: {agent: {update_policy: all}}\n").vms["agent"]
    after = AFTER_DPKG.replace("2025b-4", "2025c-0+deb13u1")
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(BEFORE_DPKG, PENDING), state(after, "")],
        "applying security updates": [""],
        "applying all updates": [""],
        "reading tool versions": [probe()],
    })

    report = steps.update_vm(vm, guest, no_provision)

    assert "upgrade --with-new-pkgs" in guest.script("applying all updates")
    assert ("tzdata", "updates") in [(c.name, c.reason) for c in report.upgraded]
    assert report.pending == []


def test_a_second_run_has_nothing_to_do(inventory):
    vm = inventory().vms["agent"]
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(AFTER_DPKG, LEFT), state(AFTER_DPKG, LEFT)],
        "reading tool versions": [probe()],
    })

    report = steps.update_vm(vm, guest, no_provision)

    assert report.status == "current"
    assert report.upgraded == [] and report.installed == [] and report.removed == []
    assert [(c.name, c.version, c.reason) for c in report.current] == [
        ("opencode-ai", "1.18.33", "pinned"), ("uv", "0.13.9", "pinned"),
        ("gh", "2.80.0", "latest"),
    ]


def test_tracking_latest_runs_the_role_with_the_version_npm_names(inventory):
    vm = inventory("vms: {agent: {opencode: {track: latest}}}\n").vms["agent"]
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(AFTER_DPKG, ""), state(AFTER_DPKG, "")],
        "asking npm for the latest opencode-ai": ["1.18.40\n"],
        "reading tool versions": [probe("1.18.30"), probe("1.18.40")],
    })
    ran = []

    report = steps.update_vm(vm, guest, lambda v, roles: ran.append((v, roles)))

    assert "npm view opencode-ai@latest version" in guest.script(
        "asking npm for the latest opencode-ai")
    assert [roles for _, roles in ran] == [["opencode"]]
    assert ran[0][0].settings.opencode.version == "1.18.40"
    assert vm.settings.opencode.version is None
    assert [(c.name, c.kind, c.old, c.new, c.reason) for c in report.upgraded] == [
        ("opencode-ai", "tool", "1.18.30", "1.18.40", "latest")]


def test_a_pinned_tool_behind_its_pin_is_brought_to_it(inventory):
    vm = inventory().vms["agent"]
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(AFTER_DPKG, ""), state(AFTER_DPKG, "")],
        "reading tool versions": [probe(uv="0.12.0"), probe()],
    })
    ran = []

    report = steps.update_vm(vm, guest, lambda v, roles: ran.append(roles))

    assert ran == [["python"]]
    assert [(c.name, c.old, c.new, c.reason) for c in report.upgraded] == [
        ("uv", "0.12.0", "0.13.9", "pinned")]


def test_a_role_that_misses_the_version_fails_the_step_and_keeps_what_changed(inventory):
    vm = inventory().vms["agent"]
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(BEFORE_DPKG, PENDING), state(AFTER_DPKG, LEFT)],
        "applying security updates": [""],
        "reading tool versions": [probe(uv="0.12.0"), probe(uv="0.12.1")],
    })
    report = VMReport("agent")

    with pytest.raises(StepFailed, match="provisioning python: uv is 0.12.1, expected"):
        steps.update_vm(vm, guest, lambda v, roles: None, report)

    assert report.status == "failed"
    assert [(c.name, c.old, c.new) for c in report.upgraded] == [
        ("libzstd1", "1.5.7+dfsg-1", "1.5.7+dfsg-1+deb13u1"),
        ("zstd", "1.5.7+dfsg-1", "1.5.7+dfsg-1+deb13u1"),
        ("uv", "0.12.0", "0.12.1"),
    ]


def test_reboot_required_is_reported_with_its_packages(inventory):
    vm = inventory().vms["agent"]
    guest = RecordedGuest({
        "apt-get update": [""],
        "reading the package state": [state(AFTER_DPKG, ""),
                                      state(AFTER_DPKG, "", "reboot=yes\nlibc6\n")],
        "reading tool versions": [probe()],
    })

    report = steps.update_vm(vm, guest, no_provision)

    assert report.reboot_required
    assert report.reboot_packages == ["libc6"]


def test_refresh_waits_for_the_lists_lock_within_the_bound():
    script = refresh_script(120)

    assert "apt-get -o DPkg::Lock::Timeout=120 -q update" in script
    assert "*/var/lib/apt/lists/lock*)" in script
    assert "deadline=$(( $(date +%s) + 120 ))" in script


def test_refresh_script_waits_for_a_held_lists_lock_then_gives_up(tmp_path):
    """Run the script against a stand-in apt-get that finds the lists lock always taken."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho tried >> \"$(dirname \"$0\")/tries\"\n"
                    "echo 'E: Could not get lock /var/lib/apt/lists/lock. It is held by "
                    "process 42 (apt-get)' >&2\nexit 100\n")
    fake.chmod(0o755)
    script = refresh_script(0).replace("sleep 5", "sleep 0")

    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)

    assert result.returncode == 1
    assert "another apt kept /var/lib/apt/lists/lock for 0s" in result.stderr
    assert (bin_dir / "tries").read_text().count("tried") == 1


# ---- run(): the whole inventory, skipping, exit codes, the kept report --------------------


class FakeProvider:
    name = "fake"

    def __init__(self, status: str):
        self.status = status
        self.calls: list[str] = []

    def machine(self, name):
        return Machine(name, "fake", self.status, f"fake-{name}", Path("/nonexistent"))

    def start(self, vm):
        self.calls.append("start")

    def stop(self, vm):
        self.calls.append("stop")

    def ssh_config(self, name):
        return Path("/nonexistent")

    def ssh_host(self, name):
        return f"fake-{name}"


@pytest.fixture
def provider(monkeypatch):
    def install(status: str, outcome: dict | Exception | None = None):
        """A provider whose VM is in ``status``; updating it gives ``outcome``."""
        fake = FakeProvider(status)
        monkeypatch.setattr("corral.providers.provider_for", lambda vm: fake)

        def update_vm(vm, guest, provision, report):
            if isinstance(outcome, Exception):
                raise outcome
            for key, value in (outcome or {}).items():
                setattr(report, key, value)
            return report

        monkeypatch.setattr(task, "update_vm", update_vm)
        return fake

    return install


def test_a_stopped_vm_is_skipped_with_a_line_saying_so(inventory, provider, capsys):
    fake = provider(STOPPED)

    code = update.run(inventory(), None)

    assert code == EXIT_OK
    assert "agent: skipped, the VM is stopped (pass --start-stopped to update it)" in (
        capsys.readouterr().out)
    assert fake.calls == []


def test_start_stopped_starts_the_vm_and_stops_it_again(inventory, provider):
    fake = provider(STOPPED)

    update.run(inventory(), None, start_stopped=True)

    assert fake.calls == ["start", "stop"]


def test_json_report_is_one_document_and_is_kept_in_the_state_folder(inventory, provider,
                                                                      capsys, tmp_path):
    provider(RUNNING, {"status": "updated", "upgraded": [
        Change("zstd", "package", "1.5.7+dfsg-1", "1.5.7+dfsg-1+deb13u1", "security")]})

    code = update.run(inventory(), None, as_json=True)

    printed = json.loads(capsys.readouterr().out)
    kept = json.loads((tmp_path / "state" / "update-last.json").read_text())
    assert code == 0
    assert printed == kept
    assert printed["vms"][0]["upgraded"] == [{
        "name": "zstd", "kind": "package", "old": "1.5.7+dfsg-1",
        "new": "1.5.7+dfsg-1+deb13u1", "reason": "security"}]
    assert printed["exit_code"] == 0


def test_a_vm_needing_a_reboot_exits_3(inventory, provider):
    provider(RUNNING, {"status": "updated", "reboot_required": True})

    assert update.run(inventory(), None, as_json=True) == EXIT_REBOOT


def test_a_failed_step_exits_1_naming_the_vm_and_the_step(inventory, provider, capsys):
    provider(RUNNING, StepFailed("applying security updates", "dpkg was interrupted"))

    code = update.run(inventory(), None)

    out = capsys.readouterr().out
    assert code == EXIT_FAILED
    assert "✗ agent: applying security updates: dpkg was interrupted" in out


def test_a_failure_outranks_a_reboot_in_the_exit_code():
    reports = [VMReport("a", reboot_required=True), VMReport("b", status="failed")]

    assert exit_code(reports) == EXIT_FAILED


def test_json_output_is_the_document_alone_even_when_roles_print(inventory, monkeypatch,
                                                                 capfd):
    import subprocess

    fake = FakeProvider(RUNNING)
    monkeypatch.setattr("corral.providers.provider_for", lambda vm: fake)

    def noisy_update(vm, guest, provision, report):
        output.say("provisioning: 3 operations")
        subprocess.run(["echo", "pyinfra child output"], check=True)
        return report

    monkeypatch.setattr(task, "update_vm", noisy_update)

    update.run(inventory(), None, as_json=True)

    out, err = capfd.readouterr()
    assert json.loads(out)["vms"][0]["name"] == "agent"
    assert "provisioning: 3 operations" in err
    assert "pyinfra child output" in err


def test_a_vm_that_was_never_created_is_skipped(inventory, monkeypatch, capsys):
    fake = FakeProvider(RUNNING)
    fake.machine = lambda name: None
    monkeypatch.setattr("corral.providers.provider_for", lambda vm: fake)

    assert update.run(inventory(), None) == EXIT_OK
    assert "agent: skipped, the VM does not exist" in capsys.readouterr().out


def test_roles_run_on_a_copy_of_the_vm_with_the_resolved_versions(inventory, monkeypatch,
                                                                  tmp_path):
    from corral import provision

    vm = inventory("defaults: {toolchains: [python, go]}\n"
                   "vms: {Agent_One: {opencode: {track: latest}, cpus: 2}}\n").vms["agent-one"]
    seen = {}

    def run(inv, names, roles):
        print("pyinfra progress")
        seen.update(names=names, roles=roles, vm=inv.vms[names], path=inv.path)

    monkeypatch.setattr(provision, "run", run)
    changed = steps._with_settings(vm, {"opencode": {"version": "1.18.40"}})

    task._provision(changed, ["opencode"])

    assert seen["names"] == "agent-one" and seen["roles"] == ["opencode"]
    assert not seen["path"].exists()
    assert "pyinfra progress" in (tmp_path / "state/update-agent-one-provision.log").read_text()
    expected = host_data(vm)
    expected["opencode_version"] = "1.18.40"
    assert host_data(seen["vm"]) == expected


def test_a_release_opencode_stays_on_its_pin_even_with_track_latest(inventory):
    vm = inventory("vms: {agent: {opencode: {source: release, track: latest}}}\n").vms["agent"]
    facts = {"opencode_release": "1.18.33", "uv": "0.13.9"}

    overrides, wanted = steps._tool_targets(vm, host_data(vm), facts, guest=None)

    assert overrides == {}
    assert wanted["opencode"] == ("1.18.33", "pinned")
    assert "opencode-ai" not in wanted


def test_a_rust_toolchain_missing_from_rustup_is_behind_its_pin():
    rust = next(t for t in TOOLS if t.name == "rust")
    facts = {"rust_toolchains": ["1.93.0-x86_64-unknown-linux-gnu"]}

    assert rust.installed(facts, "1.94.1") == "1.93.0"
    assert rust.installed({"rust_toolchains": ["1.94.1-x86_64-unknown-linux-gnu"]},
                          "1.94.1") == "1.94.1"
    assert rust.installed({"rust_toolchains": []}, "1.94.1") is None


def test_tracking_go_asks_the_download_site_of_the_role_and_takes_its_sum(inventory):
    import http.server
    import threading

    from .test_update_parsing import GO_RELEASES

    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            assert self.path == "/dl/?mode=json&include=all"
            body = json.dumps(GO_RELEASES).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/dl"
        vm = inventory("vms: {agent: {toolchains: [go], go: {track: latest, version: 1.26.7, "
                       f"url: '{url}'}}}}}}\n").vms["agent"]

        overrides, wanted = steps._tool_targets(vm, host_data(vm), {"arch": "amd64"},
                                                guest=None)
    finally:
        server.shutdown()

    assert wanted["go"] == ("1.26.10", "latest")
    assert overrides["go"]["version"] == "1.26.10"
    assert overrides["go"]["sha256"]["amd64"] == "a10"


def test_tracking_uv_asks_the_package_index_through_uv(inventory, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text("#!/bin/sh\ncat > /dev/null\necho 'uv==0.14.2'\n")
    (bin_dir / "uv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    vm = inventory("vms: {agent: {python: {track: latest}}}\n").vms["agent"]

    overrides, wanted = steps._tool_targets(vm, host_data(vm), {"uv": "0.13.9"}, guest=None)

    assert wanted["uv"] == ("0.14.2", "latest")
    assert overrides == {"python": {"uv_version": "0.14.2"}}
