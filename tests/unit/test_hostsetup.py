"""host.setup's pure parts: reading apt sources, deriving backports, choosing a subnet."""

from __future__ import annotations

import ipaddress

import pytest

from corral import hostsetup
from corral.errors import HostError
from corral.hostsetup import AptSource

DEB822 = """\
Types: deb
# a snapshot, commented out
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_parse_deb822_reads_each_enabled_deb_stanza():
    sources = hostsetup.parse_deb822(DEB822)

    assert [s.uri for s in sources] == ["http://mirror.example/debian",
                                         "http://mirror.example/debian-security"]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_parse_list_reads_options_and_skips_comments_and_deb_src():
    text = ("# deb http://commented.example/debian bookworm main\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n"
            "deb http://cloud.example/apt cloud-sdk main\n")

    sources = hostsetup.parse_list(text)

    assert sources == [
        AptSource("http://m.example/debian", ("bookworm",), ("main", "contrib"), "/k.gpg"),
        AptSource("http://cloud.example/apt", ("cloud-sdk",), ("main",), None),
    ]


def test_debian_mirror_is_the_main_source_for_the_release_not_security():
    sources = hostsetup.parse_deb822(DEB822)

    mirror = hostsetup.debian_mirror(sources, "bookworm")

    assert mirror.uri == "http://mirror.example/debian"
    assert hostsetup.security_mirror(sources).uri == "http://mirror.example/debian-security"


def test_debian_mirror_is_none_when_no_source_serves_the_release():
    sources = hostsetup.parse_list("deb http://cloud.example/apt cloud-sdk-bookworm main\n")

    assert hostsetup.debian_mirror(sources, "bookworm") is None


def test_backports_line_uses_the_host_mirror_and_its_keyring():
    mirror = AptSource("http://mirror.example/debian", ("bookworm",), ("main",), "/k.gpg")

    assert hostsetup.backports_line(mirror, "bookworm") == (
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm-backports main\n")


@pytest.fixture
def apt_dir(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    return tmp_path


def test_ensure_backports_adds_one_file_derived_from_the_mirror(apt_dir, capsys):
    hostsetup.ensure_backports("bookworm", apt_dir)

    added = apt_dir / "sources.list.d" / hostsetup.BACKPORTS_FILE
    assert added.read_text() == ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
                                 " http://mirror.example/debian bookworm-backports main\n")
    assert "added from http://mirror.example/debian" in capsys.readouterr().out


def test_ensure_backports_twice_changes_nothing_the_second_time(apt_dir, capsys):
    hostsetup.ensure_backports("bookworm", apt_dir)
    capsys.readouterr()

    hostsetup.ensure_backports("bookworm", apt_dir)

    assert "nothing to do" in capsys.readouterr().out
    assert len(list((apt_dir / "sources.list.d").iterdir())) == 2


def test_ensure_backports_refuses_without_a_debian_mirror(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://cloud.example/apt cloud-sdk main\n")

    with pytest.raises(HostError, match="no Debian mirror for bookworm"):
        hostsetup.ensure_backports("bookworm", tmp_path)
    assert not (tmp_path / "sources.list.d").exists()


def test_free_subnet_skips_candidates_the_host_already_routes():
    used = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("10.77.0.0/16")]

    assert str(hostsetup.free_subnet(used)) == "10.78.0.0/24"


def test_free_subnet_refuses_when_every_candidate_is_taken():
    with pytest.raises(HostError, match="every candidate bridge subnet"):
        hostsetup.free_subnet([ipaddress.ip_network("10.0.0.0/8")], ("10.1.0.0/24",))


def test_os_release_reads_quoted_values(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                    "VERSION_CODENAME=bookworm\n")

    assert hostsetup.os_release(path)["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert hostsetup.os_release(path)["VERSION_CODENAME"] == "bookworm"


def test_setup_refuses_incus_on_macos(monkeypatch):
    monkeypatch.setattr(hostsetup.platform, "system", lambda: "Darwin")

    with pytest.raises(HostError, match="Linux hosts only"):
        hostsetup.setup("incus")


def test_setup_refuses_incus_without_root(monkeypatch):
    monkeypatch.setattr(hostsetup.platform, "system", lambda: "Linux")
    monkeypatch.setattr(hostsetup.os, "geteuid", lambda: 1000)

    with pytest.raises(HostError, match="needs root"):
        hostsetup.setup("incus")


def test_setup_for_lima_prints_the_install_hint_when_limactl_is_missing(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(HostError, match="brew install lima"):
        hostsetup.setup("lima")
    assert "✗ limactl not found" in capsys.readouterr().out


def test_setup_refuses_an_unknown_provider():
    with pytest.raises(HostError, match="'docker' is not one of: lima, incus"):
        hostsetup.setup("docker")


def _tools(tmp_path, monkeypatch, **scripts: str):
    """Stand-in executables (sh scripts) first on PATH; each logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls\n{body}\n')
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return lambda: (tmp_path / "calls").read_text().splitlines()


def test_ensure_daemon_starts_incusd_in_the_background_without_systemd(tmp_path, monkeypatch,
                                                                        capsys):
    # The stand-in daemon answers once it has started (it leaves a marker file); like the
    # real one, `incus admin waitready` returns only when it does (here within 10 s).
    marker = tmp_path / "started"
    calls = _tools(tmp_path, monkeypatch,
                   incus=(f'[ "$1" = query ] && {{ [ -e {marker} ] || exit 1; }}\n'
                          f'[ "$1" = admin ] && for i in $(seq 100); do '
                          f'[ -e {marker} ] && exit 0; sleep 0.1; done\nexit 0'),
                   incusd=f"touch {marker}")
    monkeypatch.setattr(hostsetup, "INCUSD", str(tmp_path / "bin" / "incusd"))
    monkeypatch.setattr(hostsetup, "INCUSD_LOG", tmp_path / "log" / "incusd.log")
    monkeypatch.setattr(hostsetup, "systemd_is_init", lambda: False)

    hostsetup.ensure_daemon()

    assert "incusd --group root" in calls()
    assert "incus admin waitready --timeout 60" in calls()
    assert "Incus daemon started in the background" in capsys.readouterr().out


def test_ensure_daemon_uses_the_service_under_systemd(tmp_path, monkeypatch, capsys):
    calls = _tools(tmp_path, monkeypatch, incus='[ "$1" = query ] && exit 1\nexit 0',
                   systemctl="exit 0")
    monkeypatch.setattr(hostsetup, "systemd_is_init", lambda: True)

    hostsetup.ensure_daemon()

    assert "systemctl enable --now incus.socket incus.service" in calls()
    assert "as the incus service" in capsys.readouterr().out


def test_ensure_daemon_has_nothing_to_do_when_the_daemon_answers(tmp_path, monkeypatch, capsys):
    calls = _tools(tmp_path, monkeypatch, incus="exit 0")

    hostsetup.ensure_daemon()

    assert calls() == ["incus query /1.0"]
    assert "nothing to do" in capsys.readouterr().out


def test_ensure_profile_adds_the_missing_root_disk_and_nic(tmp_path, monkeypatch):
    calls = _tools(tmp_path, monkeypatch,
                   incus='[ "$1" = query ] && echo \'{"devices": {}}\'\nexit 0')

    hostsetup.ensure_profile()

    assert calls()[1:] == [
        "incus profile device add default root disk path=/ pool=default",
        "incus profile device add default eth0 nic network=incusbr0 name=eth0",
    ]


def test_ensure_bridge_creates_it_on_a_subnet_the_host_does_not_route(tmp_path, monkeypatch):
    routes = '[{"dst": "default"}, {"dst": "10.77.0.0/24"}, {"dst": "192.0.2.0/24"}]'
    calls = _tools(tmp_path, monkeypatch,
                   incus='[ "$2" = show ] && exit 1\nexit 0',
                   ip=f"echo '{routes}'")

    hostsetup.ensure_bridge()

    assert calls()[-1] == ("incus network create incusbr0 ipv4.address=10.78.0.1/24 "
                           "ipv4.nat=true ipv6.address=none")


def test_install_on_debian_12_adds_backports_then_installs_incus_from_it(apt_dir, tmp_path,
                                                                        monkeypatch):
    calls = _tools(tmp_path, monkeypatch, **{"dpkg-query": "exit 1", "apt-get": "exit 0"})
    monkeypatch.setattr(hostsetup, "APT_SOURCES", apt_dir)
    monkeypatch.setattr(hostsetup, "os_release",
                        lambda: {"ID": "debian", "VERSION_CODENAME": "bookworm"})

    hostsetup.install_incus_package()

    assert (apt_dir / "sources.list.d" / hostsetup.BACKPORTS_FILE).exists()
    assert [c for c in calls() if c.startswith("apt-get")] == [
        "apt-get -q update",
        "apt-get -q install -y --no-install-recommends -t bookworm-backports incus",
        "apt-get -q install -y --no-install-recommends dnsmasq-base",
        "apt-get -q install -y --no-install-recommends debootstrap",
    ]


def test_install_on_debian_13_takes_incus_from_the_release(apt_dir, tmp_path, monkeypatch):
    calls = _tools(tmp_path, monkeypatch, **{
        "dpkg-query": '[ "$3" = incus ] && exit 1\necho "install ok installed"',
        "apt-get": "exit 0"})
    monkeypatch.setattr(hostsetup, "APT_SOURCES", apt_dir)
    monkeypatch.setattr(hostsetup, "os_release",
                        lambda: {"ID": "debian", "VERSION_CODENAME": "trixie"})

    hostsetup.install_incus_package()

    assert not (apt_dir / "sources.list.d" / hostsetup.BACKPORTS_FILE).exists()
    assert [c for c in calls() if c.startswith("apt-get")] == [
        "apt-get -q update",
        "apt-get -q install -y --no-install-recommends incus",
    ]
