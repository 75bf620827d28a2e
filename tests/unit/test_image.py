"""image.build's pure parts: image definitions, metadata, and the tree it customises."""

from __future__ import annotations

import pytest

from corral import image
from corral.errors import HostError


def test_each_image_installs_sshd_sudo_systemd_and_a_dhcp_client():
    for definition in image.IMAGES.values():
        for package in ("systemd-sysv", "openssh-server", "sudo", "ca-certificates",
                        "ifupdown", definition.dhcp_client):
            assert package in definition.packages


def test_images_map_to_their_debian_suites():
    assert image.spec("debian-13").suite == "trixie"
    assert image.spec("debian-12").suite == "bookworm"
    assert image.alias("debian-12") == "corral/debian-12"


def test_spec_refuses_an_image_it_cannot_build():
    with pytest.raises(HostError, match="'ubuntu-24.04' cannot be built here"):
        image.spec("ubuntu-24.04")


def test_metadata_names_the_release_and_templates_the_hostname():
    meta = image.metadata(image.spec("debian-13"), "x86_64", 1700000000)

    assert meta["architecture"] == "x86_64"
    assert meta["creation_date"] == 1700000000
    assert meta["properties"]["release"] == "trixie"
    assert meta["properties"]["description"] == "Debian 13 (trixie), built by corral"
    assert meta["templates"]["/etc/hostname"] == {"when": ["create", "copy"],
                                                  "template": "hostname.tpl"}


def test_apt_sources_add_security_only_when_the_host_has_it():
    with_security = image.apt_sources(image.spec("debian-13"), "http://m/debian",
                                      "http://m/debian-security")
    without = image.apt_sources(image.spec("debian-13"), "http://m/debian", None)

    assert "Suites: trixie trixie-updates" in with_security
    assert "URIs: http://m/debian-security\nSuites: trixie-security" in with_security
    assert "security" not in without


@pytest.fixture
def rootfs(tmp_path):
    """A tree shaped like debootstrap's output, with what customise must remove."""
    root = tmp_path / "rootfs"
    for folder in ("etc/network", "etc/apt/sources.list.d", "etc/ssh", "etc/systemd/system",
                   "var/cache/apt/archives", "var/lib/apt/lists", "var/lib/dbus"):
        (root / folder).mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text("deb http://m/debian trixie main\n")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("private")
    (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text("public")
    (root / "etc/ssh/sshd_config").write_text("# kept\n")
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef\n")
    (root / "var/cache/apt/archives/sudo_1.9_amd64.deb").write_text("")
    (root / "var/lib/apt/lists/m_debian_dists_trixie_InRelease").write_text("")
    return root


def test_customise_brings_eth0_up_with_dhcp(rootfs):
    image.customise(rootfs, image.spec("debian-13"), "http://m/debian", None)

    interfaces = (rootfs / "etc/network/interfaces").read_text()
    assert "auto eth0\niface eth0 inet dhcp" in interfaces


def test_customise_ships_no_host_keys_and_no_machine_id(rootfs):
    image.customise(rootfs, image.spec("debian-13"), "http://m/debian", None)

    assert list((rootfs / "etc/ssh").glob("ssh_host_*")) == []
    assert (rootfs / "etc/ssh/sshd_config").exists()
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert not (rootfs / "var/lib/dbus/machine-id").exists()
    wants = rootfs / "etc/systemd/system/multi-user.target.wants/corral-ssh-hostkeys.service"
    assert wants.is_symlink()
    assert "ssh-keygen -A" in (rootfs / "etc/systemd/system/corral-ssh-hostkeys.service"
                               ).read_text()


def test_customise_writes_deb822_sources_and_drops_downloaded_files(rootfs):
    image.customise(rootfs, image.spec("debian-12"), "http://m/debian", None)

    assert not (rootfs / "etc/apt/sources.list").exists()
    sources = (rootfs / "etc/apt/sources.list.d/debian.sources").read_text()
    assert "Suites: bookworm bookworm-updates" in sources
    assert list((rootfs / "var/cache/apt/archives").iterdir()) == []
    assert list((rootfs / "var/lib/apt/lists").iterdir()) == []


def test_customise_twice_gives_the_same_tree(rootfs):
    image.customise(rootfs, image.spec("debian-13"), "http://m/debian", None)
    first = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))

    image.customise(rootfs, image.spec("debian-13"), "http://m/debian", None)

    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == first


def test_customise_masks_units_that_fail_in_a_container(rootfs):
    image.customise(rootfs, image.spec("debian-13"), "http://m/debian", None)

    mask = rootfs / "etc/systemd/system/systemd-modules-load.service"
    assert mask.is_symlink()
    assert str(mask.readlink()) == "/dev/null"
