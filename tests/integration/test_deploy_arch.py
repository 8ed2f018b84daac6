"""deploy/arch/PKGBUILD: valid bash, the release it builds, its checksum, and what package() installs.

makepkg is not available here (not Arch), so package() is run by bash itself on the shipped files, with `python`
(the wheel's build and install, whose makedepends are Arch's) stubbed out; what it installs is then checked,
the units with `systemd-analyze verify`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

import pytest

from deepseek_proxy import __version__
from tests.conftest import REPO
from tests.integration.test_deploy_systemd import VENV_BINARY, verify

ARCH = REPO / "deploy" / "arch"
PKGBUILD = ARCH / "PKGBUILD"


def pkgbuild_value(expression: str) -> str:
    """A value as bash computes it from the PKGBUILD (`"${source[0]}"`, `"$pkgver"`, ...)."""
    result = subprocess.run(["bash", "-c", f'source "$1" && printf %s {expression}', "pkgbuild", str(PKGBUILD)],
                            capture_output=True, text=True, check=True, timeout=30)
    return result.stdout


def git(*args: str, cwd=REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60).stdout


def test_pkgbuild_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(PKGBUILD)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(["bash", "-n", str(ARCH / "update-checksum.sh")], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_pkgbuild_builds_the_tagged_release_of_this_version():
    assert pkgbuild_value('"$pkgver"') == __version__, "bump deploy/arch/PKGBUILD's pkgver with the package's"
    assert pkgbuild_value('"${source[0]}"') == (
        f"deepseek-proxy-{__version__}.tar.gz::https://github.com/deepseek-proxy/deepseek-proxy/archive/"
        f"v{__version__}.tar.gz")


def test_pkgbuild_checksum_is_the_tags_tarball():
    """Once the tag v$pkgver exists, the checksum must be that of its tarball (`git archive`, as GitHub serves
    it): a release that forgot deploy/arch/update-checksum.sh fails here. Before the tag exists there is no
    tarball to sum, and the PKGBUILD says SKIP (makepkg would download whatever the tag turns out to be)."""
    checksum = pkgbuild_value('"${sha256sums[0]}"')
    tag = f"v{__version__}"
    tagged = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"], cwd=REPO,
                            capture_output=True, check=False, timeout=30).returncode == 0
    if tagged:
        archive = subprocess.run(["git", "archive", "--format=tar.gz", f"--prefix=deepseek-proxy-{__version__}/",
                                  tag], cwd=REPO, capture_output=True, check=True, timeout=60).stdout
        assert checksum == hashlib.sha256(archive).hexdigest(), "run deploy/arch/update-checksum.sh after tagging"
    else:
        assert checksum == "SKIP", f"a checksum for {tag}, which is not tagged yet"


def test_update_checksum_writes_the_tags_tarball_sum(tmp_path):
    """The release step, in a throw-away clone: refused before the tag, then the sum of `git archive` of it."""
    clone = tmp_path / "clone"
    git("clone", "-q", "--shared", "--no-checkout", str(REPO), str(clone))
    pkgbuild = tmp_path / "PKGBUILD"
    shutil.copy(PKGBUILD, pkgbuild)
    script = str(ARCH / "update-checksum.sh")
    before = subprocess.run([script, str(pkgbuild)], cwd=clone, capture_output=True, text=True, timeout=60,
                            check=False)
    assert before.returncode != 0 and "tag the release first" in before.stderr
    tag = f"v{__version__}"
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "tag", "-f", "-a", tag, "-m", "test", "HEAD",
        cwd=clone)
    subprocess.run([script, str(pkgbuild)], cwd=clone, capture_output=True, text=True, timeout=60, check=True)
    archive = subprocess.run(["git", "archive", "--format=tar.gz", f"--prefix=deepseek-proxy-{__version__}/", tag],
                             cwd=clone, capture_output=True, check=True, timeout=60).stdout
    written = re.search(r"^sha256sums=\('([0-9a-f]{64})'\)", pkgbuild.read_text(), re.MULTILINE)
    assert written and written.group(1) == hashlib.sha256(archive).hexdigest()
    assert subprocess.run(["bash", "-n", str(pkgbuild)], check=False, timeout=30).returncode == 0


@pytest.fixture()
def packaged(tmp_path):
    """$pkgdir after the PKGBUILD's package(), run on this tree's files (the tarball's layout)."""
    src = tmp_path / "src" / f"deepseek-proxy-{__version__}"
    src.mkdir(parents=True)
    for name in ("README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "deploy", src / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    pkgdir = tmp_path / "pkg"
    pkgdir.mkdir()
    script = 'python() { echo "python $*" >> "$srcdir/python-calls"; }; source "$1"; cd "$srcdir"; package'
    subprocess.run(["bash", "-euo", "pipefail", "-c", script, "pkgbuild", str(PKGBUILD)], check=True, timeout=60,
                   env={**os.environ, "srcdir": str(src.parent), "pkgdir": str(pkgdir)}, capture_output=True)
    assert (src.parent / "python-calls").read_text().startswith("python -m installer --destdir=")
    return pkgdir


def test_package_installs_units_license_and_example_config(packaged, tmp_path):
    for path in ("usr/lib/systemd/user/deepseek-proxy.service", "usr/lib/systemd/system/deepseek-proxy.service",
                 "etc/deepseek-proxy/config.toml", "usr/share/doc/deepseek-proxy/config.example.toml",
                 "usr/share/doc/deepseek-proxy/nginx/deepseek-proxy-tls.conf",
                 "usr/share/licenses/deepseek-proxy/LICENSE"):
        assert (packaged / path).is_file(), path
    assert (packaged / "usr/share/licenses/deepseek-proxy/LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert pkgbuild_value('"${backup[0]}"') == "etc/deepseek-proxy/config.toml", "pacman keeps an edited config"
    for unit, user in (("usr/lib/systemd/user/deepseek-proxy.service", True),
                       ("usr/lib/systemd/system/deepseek-proxy.service", False)):
        text = (packaged / unit).read_text()
        assert re.findall(r"^ExecStart=.*$", text, re.MULTILINE) == ["ExecStart=/usr/bin/deepseek-proxy serve"]
        # /usr/bin/deepseek-proxy does not exist here: verify with this venv's command in its place.
        text = text.replace("ExecStart=/usr/bin/deepseek-proxy", f"ExecStart={VENV_BINARY}")
        result = verify(text, "deepseek-proxy.service", tmp_path, user=user)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
