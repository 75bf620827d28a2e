"""vm.update's reading of apt, dpkg and npm output (samples taken from a Debian 13 guest)."""

import pytest

from corral.update import guest, parsing, tools
from corral.update.parsing import Planned
from corral.update.report import Change

# apt-get -s upgrade --with-new-pkgs on Debian 13 with pending security and point updates.
SIMULATION = """\
Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  libgssapi-krb5-2 libzstd1 login.defs tzdata
4 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.
Inst login.defs [1:4.17.4-2] (1:4.17.4-2+deb13u1 Debian-Security:13/stable-security [all])
Conf login.defs (1:4.17.4-2+deb13u1 Debian-Security:13/stable-security [all])
Inst libzstd1 [1.5.7+dfsg-1] (1.5.7+dfsg-1+deb13u1 Debian-Security:13/stable-security [amd64])
Inst libgssapi-krb5-2 [1.21.3-5+deb13u1] (1.21.3-5+deb13u2 Debian:13.8/stable, \
Debian-Security:13/stable-security [amd64]) []
Inst tzdata [2025b-4] (2025c-0+deb13u1 Debian:13-updates/stable-updates [all])
Inst libnew1 (2.0-1 Debian:13.8/stable [amd64])
Conf libzstd1 (1.5.7+dfsg-1+deb13u1 Debian-Security:13/stable-security [amd64])
"""

# apt-cache policy without arguments: the package sources and their release fields.
POLICY = """\
Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://deb.debian.org/debian-security trixie-security/main amd64 Packages
     release v=13,o=Debian,a=stable-security,n=trixie-security,l=Debian-Security,c=main,b=amd64
     origin deb.debian.org
 500 http://deb.debian.org/debian trixie-updates/main amd64 Packages
     release v=13-updates,o=Debian,a=stable-updates,n=trixie-updates,l=Debian,c=main,b=amd64
     origin deb.debian.org
 500 http://deb.debian.org/debian trixie/main amd64 Packages
     release v=13.8,o=Debian,a=stable,n=trixie,l=Debian,c=main,b=amd64
     origin deb.debian.org
 500 https://cli.github.com/packages stable/main amd64 Packages
     release o=GitHub CLI,a=stable,n=stable,l=GitHub CLI,c=main,b=amd64
     origin cli.github.com
Pinned packages:
"""

DEBIAN_SECURITY = ["origin=Debian,codename=trixie-security,label=Debian-Security"]


def test_simulation_lists_each_package_with_old_new_and_origins():
    planned = parsing.parse_simulation(SIMULATION)

    assert planned[0] == Planned("login.defs", "1:4.17.4-2", "1:4.17.4-2+deb13u1",
                                 ("Debian-Security:13/stable-security",))
    assert planned[2].origins == ("Debian:13.8/stable", "Debian-Security:13/stable-security")
    assert [p.name for p in planned] == ["login.defs", "libzstd1", "libgssapi-krb5-2",
                                         "tzdata", "libnew1"]


def test_simulation_reads_a_new_package_without_an_old_version():
    new = parsing.parse_simulation(SIMULATION)[-1]

    assert (new.name, new.old, new.new) == ("libnew1", None, "2.0-1")


def test_simulation_of_an_up_to_date_system_plans_nothing():
    text = ("Reading package lists...\nBuilding dependency tree...\nCalculating upgrade...\n"
            "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")

    assert parsing.parse_simulation(text) == []


def test_releases_are_keyed_as_the_simulation_names_them():
    releases = parsing.parse_releases(POLICY)

    assert set(releases) == {"Debian-Security:13/stable-security",
                             "Debian:13-updates/stable-updates", "Debian:13.8/stable",
                             "GitHub CLI:stable"}
    security = releases["Debian-Security:13/stable-security"]
    assert security["n"] == "trixie-security"
    assert security["site"] == "deb.debian.org"


@pytest.mark.parametrize("pattern,expected", [
    ("origin=Debian,codename=trixie-security,label=Debian-Security", True),
    ("o=Debian,n=trixie-security", True),
    ("origin=Debian,archive=stable-security", True),
    ("origin=Debian,codename=trixie,label=Debian", False),
    ("origin=Ubuntu,archive=trixie-security", False),
    ("origin=Debian,unknown=x", False),
])
def test_origin_patterns_match_as_unattended_upgrades_reads_them(pattern, expected):
    release = parsing.parse_releases(POLICY)["Debian-Security:13/stable-security"]

    assert parsing.matches_origin(pattern, release) is expected


def test_security_plan_takes_packages_available_from_a_security_origin():
    chosen = parsing.security_plan(parsing.parse_simulation(SIMULATION),
                                  parsing.parse_releases(POLICY), DEBIAN_SECURITY)

    assert [p.name for p in chosen] == ["login.defs", "libzstd1", "libgssapi-krb5-2"]


def test_security_plan_on_ubuntu_uses_the_archive():
    policy = """\
 500 http://archive.ubuntu.com/ubuntu noble-security/main amd64 Packages
     release v=24.04,o=Ubuntu,a=noble-security,n=noble,l=Ubuntu,c=main,b=amd64
 500 http://archive.ubuntu.com/ubuntu noble-updates/main amd64 Packages
     release v=24.04,o=Ubuntu,a=noble-updates,n=noble,l=Ubuntu,c=main,b=amd64
"""
    simulation = (
        "Inst curl [8.5.0-2ubuntu10.5] (8.5.0-2ubuntu10.6 Ubuntu:24.04/noble-updates, "
        "Ubuntu:24.04/noble-security [amd64])\n"
        "Inst tzdata [2024a-3] (2025b-0ubuntu0.24.04 Ubuntu:24.04/noble-updates [all])\n"
    )

    chosen = parsing.security_plan(parsing.parse_simulation(simulation),
                                  parsing.parse_releases(policy),
                                  ["origin=Ubuntu,archive=noble-security"])

    assert [p.name for p in chosen] == ["curl"]


def test_dpkg_query_keeps_installed_packages_only():
    text = ("bash\t5.2.37-2+b10\tii \tamd64\n"
            "libzstd1\t1.5.7+dfsg-1\tii \tamd64\n"
            "oldconf\t1.0\trc \tall\n"
            "held\t2.0\thi \tall\n")

    assert parsing.parse_dpkg_query(text) == {"bash": "5.2.37-2+b10", "libzstd1": "1.5.7+dfsg-1",
                                             "held": "2.0"}


def test_dpkg_query_names_the_architecture_of_a_package_installed_twice():
    text = "libc6\t2.41-12\tii \tamd64\nlibc6\t2.41-12\tii \ti386\n"

    assert parsing.parse_dpkg_query(text) == {"libc6:amd64": "2.41-12", "libc6:i386": "2.41-12"}


def test_package_diff_names_upgrades_new_and_removed_packages():
    before = {"zstd": "1.5.7+dfsg-1", "bash": "5.2", "gone": "1"}
    after = {"zstd": "1.5.7+dfsg-1+deb13u1", "bash": "5.2", "libnew1": "2.0-1"}

    upgraded, installed, removed = parsing.diff_packages(before, after)

    assert upgraded == [Change("zstd", "package", "1.5.7+dfsg-1", "1.5.7+dfsg-1+deb13u1")]
    assert installed == [Change("libnew1", "package", None, "2.0-1", "dependency")]
    assert removed == [Change("gone", "package", "1", None)]


def test_package_diff_of_an_unchanged_system_is_empty():
    same = {"zstd": "1.5.7+dfsg-1+deb13u1"}

    assert parsing.diff_packages(same, dict(same)) == ([], [], [])


@pytest.mark.parametrize("text,expected", [
    ("1.18.40\n", "1.18.40"),
    ("opencode-ai@1.18.39 '1.18.39'\nopencode-ai@1.18.40 '1.18.40'\n", "1.18.40"),
    ("", ""),
    ("npm warn config something\n", ""),
])
def test_npm_view_answer_gives_the_version(text, expected):
    assert parsing.parse_npm_view(text) == expected


def test_reboot_flag_and_the_packages_asking_for_it():
    assert parsing.parse_reboot("reboot=yes\nlibc6\nlinux-image-amd64\nlibc6\n") == (
        True, ["libc6", "linux-image-amd64"])
    assert parsing.parse_reboot("reboot=no\n") == (False, [])


def test_guest_output_is_split_into_its_marked_sections():
    found = guest.sections("noise\n@@dpkg\na\tb\tii \n@@os\ndebian\ntrixie\n@@reboot\n")

    assert found == {"dpkg": "a\tb\tii ", "os": "debian\ntrixie", "reboot": ""}


GO_RELEASES = [
    {"version": "go1.27rc1", "stable": False, "files": [
        {"os": "linux", "arch": "amd64", "kind": "archive", "sha256": "rc"}]},
    {"version": "go1.26.9", "stable": True, "files": [
        {"os": "linux", "arch": "amd64", "kind": "archive", "sha256": "a9"},
        {"os": "linux", "arch": "arm64", "kind": "archive", "sha256": "b9"},
        {"os": "linux", "arch": "amd64", "kind": "installer", "sha256": "x"}]},
    {"version": "go1.26.10", "stable": True, "files": [
        {"os": "linux", "arch": "amd64", "kind": "archive", "sha256": "a10"}]},
    {"version": "go1.27.0", "stable": True, "files": [
        {"os": "linux", "arch": "amd64", "kind": "archive", "sha256": "new-line"}]},
]


def test_newest_go_patch_stays_on_the_pinned_line():
    assert tools.newest_go_patch("1.26.7", GO_RELEASES, "amd64") == ("1.26.10", "a10")
    assert tools.newest_go_patch("1.26.7", GO_RELEASES, "arm64") == ("1.26.9", "b9")


def test_newest_go_patch_fails_when_the_line_has_no_release():
    with pytest.raises(guest.StepFailed, match=r"no stable go1\.25\.x for linux-amd64"):
        tools.newest_go_patch("1.25.1", GO_RELEASES, "amd64")
