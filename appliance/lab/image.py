"""The Debian 12 systemd image of the lab's LB hosts and of Molecule's containers.

No image registry is reachable, so the root filesystem comes from debootstrap and goes into
podman with `podman import`. Everything lives under build/ansible/ of the checkout
(git-ignored) and is built once: the image is rebuilt only when its recipe (PACKAGES)
changes. The wheels the hosts install (they reach no index) are built here too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "ansible"
# What a fresh LB host has before the roles run. The roles' own packages are in the image
# too: a container here cannot reach a Debian mirror, and apt then only checks they are there.
PACKAGES = (
    "python3,python3-apt,python3-venv,python3-packaging,systemd,systemd-sysv,dbus,iproute2,kmod,procps,"
    "nftables,ipvsadm,conntrack,ipset,curl,ca-certificates"
)
RECIPE = f"debootstrap --variant=minbase --include={PACKAGES} bookworm"
IMAGE = "localhost/aan-debian12-systemd:" + hashlib.sha256(RECIPE.encode()).hexdigest()[:12]
# runc, not crun (crun fails on this cgroup layout); root lacks CAP_SYS_RESOURCE, so the
# containers' ulimits must stay below the host's.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
"""


def why_not() -> str | None:
    """Why the Molecule containers cannot run here, or None."""
    for tool, pkg in (("podman", "podman"), ("debootstrap", "debootstrap"), ("runc", "runc")):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install {pkg})"
    return None


def containers_conf() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


def _env() -> dict[str, str]:
    return {"CONTAINERS_CONF": str(containers_conf()), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=_env(), check=False
    )


def podman(*args: str, check: bool = True) -> str:
    """podman with the lab's containers.conf; its stdout, or an error naming the command."""
    done = _podman(*args)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: {done.stderr.strip()}")
    return done.stdout


def image() -> str:
    """The image name, built (debootstrap ~3 min, import ~6 s) when podman lacks it."""
    if _podman("image", "exists", IMAGE).returncode == 0:
        return IMAGE
    rootfs = BUILD / "rootfs"
    stamp = BUILD / "rootfs.recipe"
    if not (stamp.exists() and stamp.read_text() == RECIPE):
        shutil.rmtree(rootfs, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(rootfs)],
            check=True,
            capture_output=True,
        )
        # A container's own hostname comes from podman.
        (rootfs / "etc" / "hostname").unlink(missing_ok=True)
        stamp.write_text(RECIPE)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["podman", "import", "--change", "CMD=/sbin/init", "-", IMAGE],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    tar.wait()
    if imported.returncode != 0:
        raise RuntimeError(f"podman import failed: {imported.stderr.strip()}")
    # Images of older recipes are only disk space now.
    listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    repo = IMAGE.rsplit(":", 1)[0]
    for old in listed:
        if old.rsplit(":", 1)[0] == repo and old != IMAGE:
            _podman("rmi", old)
    return IMAGE


LOCKED = "requirements.txt"  # in the wheelhouse: the runtime part of uv.lock, with hashes


def wheels(out: Path) -> Path:
    """The LB hosts' wheelhouse in `out` (hosts in the lab reach no index): the runtime
    dependencies exactly as uv.lock pins them, their hashes checked as they are fetched,
    listed with those hashes in requirements.txt for the hosts' own check, and the appliance
    wheel. The role installs the first with --require-hashes, the appliance with --no-deps."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    locked = locked_requirements(out / LOCKED)
    # pip's config on this machine (find-links, constraints, other indexes) is not the lock's.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    pip += ["-w", str(out)]
    _run([*pip, "--require-hashes", "--no-deps", "-r", str(locked)], env)
    _run([*pip, "--no-deps", str(ROOT)], env)
    return out


def locked_requirements(path: Path) -> Path:
    """uv.lock's runtime part as a requirements file with hashes, at `path`."""
    uv = ROOT / "build" / "tools" / "bin" / "uv"
    if not uv.exists():
        raise RuntimeError(f"{uv} is missing: run `make deps` first (it installs uv)")
    _run([str(uv), "export", "-q", "--frozen", "--no-dev", "--no-emit-project",
          "--format", "requirements-txt", "--no-header", "-o", str(path)])  # fmt: skip
    return path


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed: {done.stderr.strip()[-2000:]}")


if __name__ == "__main__":
    print(image())
