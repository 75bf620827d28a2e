"""The roles' download and keyring scripts, run for real against local files."""

import hashlib
import os
import shutil
import subprocess

import pytest

from deploy.roles import common

pytestmark = pytest.mark.skipif(not shutil.which("curl") or not shutil.which("gpg"),
                                reason="needs curl and gpg on the host")


def _sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)


@pytest.fixture
def tarball(tmp_path):
    path = tmp_path / "tool.tar.gz"
    path.write_bytes(b"pretend tarball")
    return path, hashlib.sha256(b"pretend tarball").hexdigest()


def test_download_keeps_a_file_whose_sum_is_the_pinned_one(tmp_path, tarball):
    path, digest = tarball
    dest = tmp_path / "cache" / "tool.tar.gz"
    result = _sh(common.download_script(f"file://{path}", str(dest), digest,
                                        cache=str(tmp_path / "cache")))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == b"pretend tarball"


def test_download_with_another_sum_fails_and_leaves_nothing(tmp_path, tarball):
    path, _ = tarball
    cache = tmp_path / "cache"
    result = _sh(common.download_script(f"file://{path}", str(cache / "tool.tar.gz"), "0" * 64,
                                        cache=str(cache)))
    assert result.returncode == 1
    assert "expected the pinned " + "0" * 64 in result.stderr
    assert "nothing installed" in result.stderr
    assert list(cache.iterdir()) == []


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    """A throw-away OpenPGP key: (armored public key file, fingerprint)."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "corral test <test@example.invalid>", "ed25519", "sign", "never"],
                   env=env, check=True, capture_output=True)
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env,
                             check=True, capture_output=True, text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                       if line.startswith("fpr:"))
    key = home / "key.asc"
    key.write_text(subprocess.run(["gpg", "--batch", "--armor", "--export", fingerprint],
                                  env=env, check=True, capture_output=True, text=True).stdout)
    return key, fingerprint


def test_keyring_holds_the_key_with_the_pinned_fingerprint(tmp_path, signing_key):
    key, fingerprint = signing_key
    dest = tmp_path / "keyrings" / "test.gpg"
    result = _sh(common.keyring_script(f"file://{key}", fingerprint, str(dest),
                                       keyrings=str(dest.parent)))
    assert result.returncode == 0, result.stderr
    shown = subprocess.run(["gpg", "--batch", "--show-keys", "--with-colons", str(dest)],
                           capture_output=True, text=True, check=True).stdout
    assert f":{fingerprint}:" in shown


def test_key_with_another_fingerprint_fails_and_leaves_no_keyring(tmp_path, signing_key):
    key, fingerprint = signing_key
    dest = tmp_path / "keyrings" / "test.gpg"
    wrong = "A" * 40
    result = _sh(common.keyring_script(f"file://{key}", wrong, str(dest),
                                       keyrings=str(dest.parent)))
    assert result.returncode == 1
    assert f"does not hold the key with the pinned fingerprint {wrong}" in result.stderr
    assert fingerprint in result.stderr
    assert not dest.exists()
