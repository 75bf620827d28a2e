"""The roles' pure parts, driven with Debian and Ubuntu facts (no guest needed)."""

import json

import pytest

from deploy import roles
from deploy.roles import base, common, gh, go, nodejs, opencode, python, rust, security, shell

DEBIAN_CODENAMES = ["bookworm", "trixie"]
UBUNTU_CODENAMES = ["noble", "resolute"]


@pytest.mark.parametrize("codename", DEBIAN_CODENAMES)
def test_debian_gets_only_its_security_suite(codename):
    assert security.origins("debian", codename) == [
        f"origin=Debian,codename={codename}-security,label=Debian-Security"]


@pytest.mark.parametrize("codename", UBUNTU_CODENAMES)
def test_ubuntu_gets_its_security_pockets_including_esm(codename):
    found = security.origins("ubuntu", codename)
    assert f"origin=Ubuntu,archive={codename}-security" in found
    assert all("security" in pattern for pattern in found)
    assert not any(pattern.endswith(f"archive={codename}") for pattern in found)


@pytest.mark.parametrize("distro, codename", [("debian", "trixie"), ("ubuntu", "noble")])
def test_update_policy_all_adds_the_regular_updates(distro, codename):
    security_only = security.origins(distro, codename)
    everything = security.origins(distro, codename, "all")
    assert set(security_only) < set(everything)
    assert any("-updates" in pattern for pattern in everything)


def test_refuses_a_distribution_it_does_not_know():
    with pytest.raises(common.RoleError, match="fedora: not Debian or Ubuntu"):
        security.origins("fedora", "40")


def test_origins_config_clears_the_package_defaults_before_adding_its_own():
    text = security.origins_config(security.origins("ubuntu", "noble"))
    assert text.index("#clear Unattended-Upgrade::Allowed-Origins;") < text.index(
        "Unattended-Upgrade::Origins-Pattern {")
    assert '"origin=Ubuntu,archive=noble-security";' in text
    assert 'Automatic-Reboot "false"' in text


def test_origins_config_reboots_at_the_given_time():
    text = security.origins_config(["x"], reboot_time="03:30")
    assert 'Automatic-Reboot "true"' in text and 'Automatic-Reboot-Time "03:30"' in text


def test_apt_config_bounds_the_wait_for_the_dpkg_lock():
    assert 'DPkg::Lock::Timeout "120";' in base.apt_config(120)


def test_needrestart_runs_in_automatic_mode():
    assert "$nrconf{restart} = 'a';" in base.needrestart_config()


def test_base_packages_add_extras_once_and_keep_the_agent_tools():
    found = base.packages(["htop", "git"])
    assert found.count("git") == 1 and "htop" in found
    assert {"ripgrep", "fd-find", "jq", "curl", "build-essential", "gnupg"} <= set(found)


def test_ca_files_get_a_crt_name_update_ca_certificates_accepts():
    assert base.ca_cert_name("/etc/proxy/ca.pem") == "corral-ca.crt"


def test_gh_source_line_names_the_keyring_it_is_signed_by():
    line = common.apt_source("https://example.test/packages/", "stable", "main", gh.KEYRING,
                             "arm64")
    assert line == (f"deb [arch=arm64 signed-by={gh.KEYRING}] "
                    "https://example.test/packages stable main")


def test_nodesource_url_carries_the_pinned_major():
    assert nodejs.repository_url("https://n.test/node_{major}.x", 22) == "https://n.test/node_22.x"


def test_nodesource_wins_over_the_distribution_through_an_origin_pin():
    text = nodejs.pin_preferences("https://n.test/node_22.x")
    assert "Pin: origin n.test" in text and "Pin-Priority: 600" in text


def test_nodesource_nodejs_brings_its_own_npm():
    assert nodejs.packages("nodesource") == ["nodejs"]
    assert nodejs.packages("distro") == ["nodejs", "npm"]


def _opencode_data(**extra):
    return {"opencode_model_provider": "azure", "opencode_model": "gpt-4.1",
            "opencode_azure_resource": "", "credentials_model_key_env": "AZURE_OPENAI_API_KEY",
            **extra}


def test_opencode_config_names_the_key_variable_never_the_key():
    text = json.dumps(opencode.config(_opencode_data(opencode_azure_resource="corp-ai")))
    config = json.loads(text)
    assert config["model"] == "azure/gpt-4.1"
    assert config["provider"]["azure"]["options"] == {
        "apiKey": "{env:AZURE_OPENAI_API_KEY}", "resourceName": "corp-ai"}


def test_opencode_config_refuses_an_unknown_model_provider():
    with pytest.raises(common.RoleError, match="opencode_model_provider: 'nope'"):
        opencode.config(_opencode_data(opencode_model_provider="nope"))


def test_opencode_npm_install_is_pinned_and_trusts_the_system_cas():
    command = opencode.npm_install_command("1.18.33")
    assert command.endswith("opencode-ai@1.18.33")
    assert f"NODE_EXTRA_CA_CERTS={common.SYSTEM_CA_BUNDLE}" in command


@pytest.mark.parametrize("arch, name", [("amd64", "x64"), ("arm64", "arm64")])
def test_opencode_release_url_uses_upstream_arch_names(arch, name):
    assert opencode.release_url("https://r.test/dl/", "1.2.3", arch) == (
        f"https://r.test/dl/v1.2.3/opencode-linux-{name}.tar.gz")


def test_uv_install_is_pinned_and_trusts_the_system_cas():
    command = python.uv_install_command("0.13.9")
    assert "uv==0.13.9" in command and f"PIP_CERT={common.SYSTEM_CA_BUNDLE}" in command


def test_go_tarball_url_follows_go_dev_naming():
    assert go.tarball_url("https://go.test/dl/", "1.26.7", "amd64") == (
        "https://go.test/dl/go1.26.7.linux-amd64.tar.gz")


def test_go_install_swaps_the_tree_only_after_the_check():
    download, swap = go.install_commands("https://go.test/x.tgz", "a" * 64, "1.26.7")
    assert "sha256sum" in download
    assert swap.index(f"rm -rf {go.GOROOT};") > swap.index("tar -C")


def test_rustup_url_and_toolchain_folder_use_the_rust_target():
    assert rust.rustup_url("https://r.test/archive", "1.29.0", "arm64") == (
        "https://r.test/archive/1.29.0/aarch64-unknown-linux-gnu/rustup-init")
    assert rust.toolchain_dir("1.94.1", "amd64") == "1.94.1-x86_64-unknown-linux-gnu"


def test_rustup_leaves_path_to_the_shell_role():
    command = rust.rustup_init_command("/x/rustup-init", "1.94.1", "https://d.test")
    assert "--no-modify-path" in command and "RUSTUP_DIST_SERVER=https://d.test" in command


def test_unsupported_architecture_is_refused_by_name():
    with pytest.raises(common.RoleError, match="riscv64: architecture not supported"):
        common.upstream_arch("riscv64", "go")


def test_a_missing_sum_refuses_the_download():
    with pytest.raises(common.RoleError, match=r"go.sha256.arm64: no sha256 pinned"):
        common.pinned_sha256({"amd64": "a" * 64}, "arm64", "go.sha256")


def test_shell_path_follows_the_toolchains_and_their_sources():
    data = {"toolchains": ["go", "rust"], "go_source": "distro"}
    assert shell.path_entries(data) == ["$HOME/.local/bin", "$HOME/go/bin", "$HOME/.cargo/bin"]


def test_shell_profile_adds_each_path_entry_only_once_and_sets_editor():
    text = shell.profile({"toolchains": ["go"], "go_source": "official", "shell_editor": "nano"})
    assert 'case ":$PATH:" in *":/usr/local/go/bin:"*)' in text
    assert "export EDITOR=nano" in text


def test_shell_block_sources_profile_and_secrets():
    block = shell.bashrc_block()
    assert shell.PROFILE in block and "$HOME/.config/corral/secrets.env" in block


def test_probe_output_becomes_lists_for_keyrings_and_toolchains():
    found = common.parse_probe(["distro_id=ubuntu", "keyring_gh=ABC,DEF,", "rust_toolchains=",
                                "go=go1.26.7"])
    assert found == {"distro_id": "ubuntu", "keyring_gh": ["ABC", "DEF"],
                     "rust_toolchains": [], "go": "go1.26.7", "files": {}, "links": {},
                     "dirs": {}}


def test_probe_reports_managed_paths_and_their_absence():
    found = common.parse_probe([
        "file:/etc/x=abc 644 root", "file:~/.config/corral/secrets.env=",
        "link:/usr/local/bin/fd=/usr/bin/fdfind", "link:/usr/local/bin/uv=",
        "dir:~/.config=755 corral"])
    assert found["files"] == {"/etc/x": ("abc", "644", "root"),
                              "~/.config/corral/secrets.env": None}
    assert found["links"] == {"/usr/local/bin/fd": "/usr/bin/fdfind", "/usr/local/bin/uv": None}
    assert found["dirs"] == {"~/.config": ("755", "corral")}


def test_probe_covers_every_path_the_roles_manage():
    paths = common.managed_paths({"ca_certs": ["/host/proxy.pem"]})
    assert "/usr/local/share/ca-certificates/corral-proxy.crt" in paths["files"]
    assert "~/.config/corral/secrets.env" in paths["files"]
    assert "/usr/local/bin/uv" in paths["links"] and "~/.config" in paths["dirs"]
    assert len(paths["dirs"]) == len(set(paths["dirs"]))


def test_every_role_module_defines_its_deploy():
    import importlib

    for name in roles.ROLE_NAMES:
        assert callable(getattr(importlib.import_module(f"deploy.roles.{name}"), name))


@pytest.mark.parametrize("toolchains, expected", [
    (["python", "node", "go", "rust"], list(roles.ROLE_NAMES)),
    ([], ["base", "security", "gh", "nodejs", "opencode", "shell", "credentials"]),
])
def test_toolchain_roles_follow_the_vm_toolchains(toolchains, expected):
    assert roles.selected({"toolchains": toolchains, "opencode_source": "npm"}) == expected


def test_requested_roles_keep_the_provisioning_order():
    data = {"toolchains": ["go"], "opencode_source": "npm"}
    assert roles.selected(data, ["go", "base"]) == ["base", "go"]


def test_a_requested_toolchain_role_the_vm_does_not_list_is_left_out():
    assert roles.selected({"toolchains": []}, ["rust"]) == []


def test_unknown_role_names_are_reported():
    assert roles.unknown(["base", "docker"]) == ["docker"]


def test_preflight_names_every_missing_pin():
    data = {"gh_source": "github", "gh_repo_url": "https://x", "gh_key_url": None,
            "gh_key_fingerprint": "1234", "go_source": "official", "go_version": "1.26.7",
            "go_url": "https://go.test", "go_sha256": {"amd64": ""},
            "opencode_source": "release", "opencode_version": "1.0.0",
            "opencode_release_url": "https://r.test", "opencode_release_sha256": {}}
    problems = roles.preflight(data, ["gh", "go", "opencode"])
    assert "gh.key_url: not set (pin it in inventory/versions.yaml)" in problems
    assert "gh.key_fingerprint: not a 40-digit key fingerprint" in problems
    assert "go.sha256: no sha256 pinned for any architecture" in problems
    assert any(p.startswith("opencode.release_sha256:") for p in problems)


def test_preflight_accepts_the_shipped_pins():
    from corral.hostdata import load_versions, pinned

    data = {**pinned(load_versions()), "gh_source": "github", "go_source": "official",
            "rust_source": "rustup", "nodejs_source": "nodesource", "opencode_source": "npm"}
    assert roles.preflight(data, list(roles.ROLE_NAMES)) == []


def test_package_installs_never_stop_to_ask():
    from deploy.roles import managed

    command = managed.install_command(["gh", "jq"])
    assert command.startswith("DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert "--force-confold" in command and command.endswith(" gh jq")


@pytest.mark.parametrize("path, mount, outside", [
    ("/home/corral/.config/corral/secrets.env", "/work/app", True),
    ("/work/app/.config/corral/secrets.env", "/work/app", False),
    ("/work/application/secrets.env", "/work/app", True),
])
def test_secrets_file_must_be_outside_the_shared_folder(path, mount, outside):
    from deploy.roles import credentials

    assert credentials.outside_mount(path, mount) is outside
