"""The vm.update schedule: the files written for systemd, launchd and cron, and removal."""

import os
import plistlib
import stat
import subprocess
from pathlib import Path

import pytest

from corral import schedule
from corral.errors import CorralError, HostError

FAKE_CRONTAB = """#!/bin/sh
# Stands in for crontab(1): keeps the table in a file next to this script.
table="$(dirname "$0")/crontab.txt"
case "$1" in
  -l) [ -f "$table" ] || { echo "no crontab for $USER" >&2; exit 1; }; cat "$table" ;;
  -) cat > "$table" ;;
  *) exit 2 ;;
esac
"""

# Stands in for systemctl/launchctl: records each call; FAKE_FAIL makes every call fail.
FAKE_RECORDER = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/{name}.calls"
[ -z "${{FAKE_FAIL:-}}" ]
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary HOME with corral's folders under it and an inventory in use."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("CORRAL_CONFIG_DIR", "CORRAL_STATE_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    inventory = tmp_path / "vms.yaml"
    inventory.write_text("vms: {agent: {}}\n")
    monkeypatch.setenv("CORRAL_INVENTORY", str(inventory))
    return home


@pytest.fixture
def fakes(tmp_path):
    """Fake systemctl, launchctl and crontab commands in their own folder."""
    folder = tmp_path / "fakes"
    folder.mkdir()
    _executable(folder / "crontab", FAKE_CRONTAB)
    _executable(folder / "systemctl", FAKE_RECORDER.format(name="systemctl"))
    _executable(folder / "launchctl", FAKE_RECORDER.format(name="launchctl"))
    return folder


def _calls(fakes: Path, name: str) -> list[str]:
    calls = fakes / f"{name}.calls"
    return calls.read_text().splitlines() if calls.exists() else []


def _host(home: Path, fakes: Path, platform: str = "linux", systemd: bool = True):
    systemctl = str(fakes / "systemctl") if systemd else str(fakes / "no-such-systemctl")
    return schedule.Host(home=home, platform=platform, systemctl=(systemctl, "--user"),
                         launchctl=(str(fakes / "launchctl"),), crontab=(str(fakes / "crontab"),),
                         uid=501)


def test_systemd_timer_runs_the_job_daily_at_the_given_time(home, fakes):
    host = _host(home, fakes)

    schedule.install("4:30", host=host)

    timer = (home / ".config/systemd/user/corral-update.timer").read_text()
    service = (home / ".config/systemd/user/corral-update.service").read_text()
    script = home / ".config/corral/update-job.sh"
    assert "OnCalendar=*-*-* 04:30:00" in timer
    assert "Persistent=true" in timer
    assert "WantedBy=timers.target" in timer
    assert "Type=oneshot" in service
    assert f'ExecStart=/bin/sh "{script}"' in service
    assert "SuccessExitStatus=3" in service
    assert _calls(fakes, "systemctl") == [
        "--user show-environment", "--user daemon-reload",
        "--user enable --now corral-update.timer",
    ]


def test_job_script_runs_vm_update_from_the_checkout_with_the_inventory_in_use(home, fakes):
    schedule.install("04:00", host=_host(home, fakes))

    script = (home / ".config/corral/update-job.sh").read_text()
    assert os.access(home / ".config/corral/update-job.sh", os.X_OK)
    assert f"export CORRAL_INVENTORY={os.environ['CORRAL_INVENTORY']}" in script
    assert f"cd {schedule.paths.ROOT} && " in script
    assert "run invoke vm.update >> \"$log\" 2>&1" in script
    assert f"log={home}/.local/state/corral/update.log" in script
    assert f"export CORRAL_CONFIG_DIR={home}/.config/corral" in script


def test_installing_the_same_schedule_again_changes_nothing(home, fakes, capsys):
    host = _host(home, fakes)
    schedule.install("04:00", host=host)
    timer = host.timer_file.stat().st_mtime_ns
    capsys.readouterr()

    schedule.install("04:00", host=host)

    assert "nothing to do" in capsys.readouterr().out
    assert host.timer_file.stat().st_mtime_ns == timer
    assert _calls(fakes, "systemctl").count("--user daemon-reload") == 1


def test_a_new_time_replaces_the_timer(home, fakes):
    host = _host(home, fakes)
    schedule.install("04:00", host=host)

    schedule.install("22:15", host=host)

    timer = host.timer_file.read_text()
    assert "OnCalendar=*-*-* 22:15:00" in timer
    assert "04:00" not in timer


def test_removing_the_systemd_timer_disables_it_and_deletes_the_units(home, fakes, capsys):
    host = _host(home, fakes)
    schedule.install("04:00", host=host)

    schedule.remove(host=host)

    assert not host.timer_file.exists()
    assert not host.service_file.exists()
    assert not (home / ".config/corral/update-job.sh").exists()
    assert "--user disable --now corral-update.timer" in _calls(fakes, "systemctl")
    assert "schedule removed" in capsys.readouterr().out


def test_a_failing_systemctl_is_reported_in_one_line(home, fakes, monkeypatch):
    host = _host(home, fakes)
    monkeypatch.setattr(schedule.Host, "has_user_systemd", lambda self: True)
    monkeypatch.setenv("FAKE_FAIL", "1")

    with pytest.raises(HostError, match="systemctl --user daemon-reload"):
        schedule.install("04:00", host=host)


def test_launchd_agent_runs_the_job_daily_on_macos(home, fakes):
    host = _host(home, fakes, platform="darwin")

    schedule.install("05:07", host=host)

    plist = plistlib.loads((home / "Library/LaunchAgents/dev.corral.update.plist").read_bytes())
    assert plist["Label"] == "dev.corral.update"
    assert plist["ProgramArguments"] == ["/bin/sh", str(home / ".config/corral/update-job.sh")]
    assert plist["StartCalendarInterval"] == {"Hour": 5, "Minute": 7}
    assert _calls(fakes, "launchctl") == [
        f"bootout gui/501 {host.plist_file}", f"bootstrap gui/501 {host.plist_file}",
    ]


def test_removing_the_launchd_agent_unloads_and_deletes_it(home, fakes):
    host = _host(home, fakes, platform="darwin")
    schedule.install("05:07", host=host)

    schedule.remove(host=host)

    assert not host.plist_file.exists()
    assert _calls(fakes, "launchctl")[-1] == f"bootout gui/501 {host.plist_file}"


def test_crontab_line_is_added_when_there_is_no_user_systemd(home, fakes):
    (fakes / "crontab.txt").write_text("MAILTO=me\n0 1 * * * backup\n")
    host = _host(home, fakes, systemd=False)

    schedule.install("03:45", host=host)

    script = home / ".config/corral/update-job.sh"
    assert (fakes / "crontab.txt").read_text().splitlines() == [
        "MAILTO=me", "0 1 * * * backup",
        f"45 3 * * * /bin/sh {script} {schedule.CRON_MARK}",
    ]
    assert not host.timer_file.exists()


def test_crontab_line_is_replaced_not_repeated(home, fakes):
    host = _host(home, fakes, systemd=False)
    schedule.install("03:45", host=host)
    schedule.install("03:45", host=host)
    schedule.install("06:00", host=host)

    lines = (fakes / "crontab.txt").read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("0 6 * * * /bin/sh ")


def test_removing_the_crontab_line_keeps_the_users_other_lines(home, fakes):
    (fakes / "crontab.txt").write_text("0 1 * * * backup\n")
    host = _host(home, fakes, systemd=False)
    schedule.install("03:45", host=host)

    schedule.remove(host=host)

    assert (fakes / "crontab.txt").read_text() == "0 1 * * * backup\n"


def test_removing_when_nothing_is_installed_says_nothing_to_do(home, fakes, capsys):
    schedule.remove(host=_host(home, fakes, systemd=False))

    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("at", ["25:00", "4pm", "", "12:60", "1200", "04:00:00"])
def test_refuses_a_time_that_is_not_hh_mm(home, fakes, at):
    with pytest.raises(CorralError, match=r"--at .*: not a time of day \(use HH:MM"):
        schedule.install(at, host=_host(home, fakes))

    assert not (home / ".config").exists()


def test_refuses_a_host_without_any_scheduler(home, fakes):
    host = _host(home, fakes, systemd=False)
    host.crontab = (str(fakes / "no-such-crontab"),)

    with pytest.raises(HostError, match="no systemd user manager and no crontab"):
        schedule.install("04:00", host=host)

    assert not (home / ".config").exists()


def test_status_is_none_without_a_schedule(home, fakes):
    assert schedule.status(host=_host(home, fakes, systemd=False)) is None


def test_status_says_when_the_job_runs_before_its_first_run(home, fakes):
    host = _host(home, fakes, systemd=False)
    schedule.install("03:45", host=host)

    line = schedule.status(host=host)

    assert line == "vm.update daily at 03:45 (crontab); has not run yet"


@pytest.mark.parametrize("platform,systemd,where", [
    ("linux", True, "systemd user timer"),
    ("darwin", False, "launchd agent"),
    ("linux", False, "crontab"),
])
def test_status_reads_how_the_last_run_of_the_job_ended(home, fakes, tmp_path, monkeypatch,
                                                         platform, systemd, where):
    # A stand-in uv that behaves like vm.update finding a VM that needs a reboot.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "uv", "#!/bin/sh\necho \"uv $*\"\nexit 3\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    host = _host(home, fakes, platform=platform, systemd=systemd)
    schedule.install("04:00", host=host)

    ran = subprocess.run(["/bin/sh", str(home / ".config/corral/update-job.sh")], check=False)

    assert ran.returncode == 3
    log = (home / ".local/state/corral/update.log").read_text()
    assert "uv run invoke vm.update" in log
    line = schedule.status(host=host)
    assert line.startswith(f"vm.update daily at 04:00 ({where}); last run 20")
    assert line.endswith(": exit 3 (a reboot is required)")


def test_last_run_reports_a_run_still_going(tmp_path):
    (tmp_path / "update.log").write_text(
        "== vm.update started 2026-12-01T04:00:00Z\n"
        "== vm.update ended 2026-12-01T04:02:00Z exit 0\n"
        "== vm.update started 2026-12-02T04:00:00Z\nagent: updating\n"
    )

    assert schedule.last_run(tmp_path).startswith("running since 2026-12-02T04:00:00Z")


def test_last_run_reports_a_failure(tmp_path):
    (tmp_path / "update.log").write_text(
        "== vm.update started 2026-12-01T04:00:00Z\n"
        "== vm.update ended 2026-12-01T04:02:00Z exit 1\n"
    )

    assert schedule.last_run(tmp_path) == (
        "last run 2026-12-01T04:02:00Z: exit 1 (a failure, see the log)")
