"""Boot Debian's kernel in qemu (TCG), run one command on the host's `/` seen read-only over
9p with a tmpfs overlay, and collect its output and exit code through a writable 9p share.

Artefacts (a copy of the kernel, a ~1.5 MB busybox initramfs) are built under build/vm/
when missing, from installed Debian packages: linux-image-amd64, busybox-static,
qemu-system-x86.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "vm"
# Load order matters: busybox insmod does not resolve dependencies.
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
    "fs/overlayfs/overlay.ko",
)
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/modules/$m || echo "insmod $m failed"; done
sleep 0.2
mkdir -p /lower /upper /root /results
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
  || echo "9p root mount failed"
mount -t tmpfs -o size=256m tmp /upper
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /root \
  || echo "overlay mount failed"
mkdir -p /root/mnt/vmresults
mount -t 9p -o trans=virtio,version=9p2000.L results /root/mnt/vmresults \
  || echo "9p results mount failed"
mount --move /dev /root/dev
umount /proc /sys
exec switch_root /root /bin/sh /mnt/vmresults/run.sh
"""
# Runs as PID 1 in the switched root; output goes to the share, then the VM powers off.
RUN = """set +e
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
# No tmpfs on /tmp: the host's /tmp must stay visible (CI may clone the repo there, and
# the venv with it); writes land in the overlay's tmpfs like everywhere else.
mkdir -p /run/netns
ip link set lo up
export HOME=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PYTHONPYCACHEPREFIX=/tmp/pycache
cd {cwd}
( {command} ) > /mnt/vmresults/output.txt 2>&1
echo $? > /mnt/vmresults/rc
sync
echo o > /proc/sysrq-trigger
sleep 5
"""


@dataclass(frozen=True)
class Result:
    rc: int | None  # None: the command never finished (boot failure or timeout)
    output: str
    console: str
    seconds: float


def why_not() -> str | None:
    """Why a VM cannot run here, or None."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
    if not glob.glob("/boot/vmlinuz-*-amd64"):
        return "no Debian generic kernel (apt-get install linux-image-amd64)"
    if not os.path.exists("/bin/busybox"):
        return "busybox missing (apt-get install busybox-static)"
    return None


def _kernel() -> tuple[Path, str]:
    # The generic flavour: the cloud one lacks 9p.
    candidates = sorted(p for p in glob.glob("/boot/vmlinuz-*-amd64") if "cloud" not in p)
    if not candidates:
        raise RuntimeError("no /boot/vmlinuz-*-amd64: apt-get install linux-image-amd64")
    path = Path(candidates[-1])
    return path, path.name.removeprefix("vmlinuz-")


def _cpio_newc(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks) of {path: (mode, data)}."""
    out = io.BytesIO()
    ino = 1
    for name, (mode, data) in [*files.items(), ("TRAILER!!!", (0, b""))]:
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(
            f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        )
        out.write(header.encode() + encoded)
        out.write(b"\0" * ((4 - (110 + len(encoded)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
        ino += 1
    return out.getvalue()


def build() -> tuple[Path, Path]:
    """The kernel and initramfs under build/vm/, (re)built when missing or stale."""
    kernel, version = _kernel()
    BUILD.mkdir(parents=True, exist_ok=True)
    vmlinuz = BUILD / f"vmlinuz-{version}"
    initrd = BUILD / f"initramfs-{version}.cpio.gz"
    if not vmlinuz.exists():
        shutil.copyfile(kernel, vmlinuz)
    if not initrd.exists():
        moddir = Path("/lib/modules") / version / "kernel"
        files: dict[str, tuple[int, bytes]] = {}
        for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "lower", "upper", "root"):
            files[d] = (0o040755, b"")
        files["bin/busybox"] = (0o100755, Path("/bin/busybox").read_bytes())
        names = []
        for m in MODULES:
            base = Path(m).name
            files[f"lib/modules/{base}"] = (0o100644, (moddir / m).read_bytes())
            names.append(base)
        files["init"] = (0o100755, INIT.format(modules=" ".join(names)).encode())
        tmp = initrd.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(_cpio_newc(files), 6))
        tmp.rename(initrd)
    return vmlinuz, initrd


def run(command: str, timeout: float = 330.0, cwd: Path = ROOT, memory: str = "768M") -> Result:
    """Boot, run `command` (a shell line) in `cwd`, power off; never raises on guest failure."""
    vmlinuz, initrd = build()
    with tempfile.TemporaryDirectory(prefix="adp-vm-") as share:
        Path(share, "run.sh").write_text(RUN.format(cwd=cwd, command=command))
        argv = [
            "qemu-system-x86_64",
            *("-accel", "tcg,tb-size=128", "-machine", "pc", "-cpu", "max", "-smp", "2"),
            *("-m", memory, "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"),
            *("-kernel", str(vmlinuz), "-initrd", str(initrd)),
            "-fsdev",
            "local,id=r,path=/,security_model=none,readonly=on,multidevs=remap",
            *("-device", "virtio-9p-pci,fsdev=r,mount_tag=hostroot"),
            *("-fsdev", f"local,id=o,path={share},security_model=none"),
            *("-device", "virtio-9p-pci,fsdev=o,mount_tag=results"),
            *("-append", "console=ttyS0 quiet loglevel=1 panic=-1"),
        ]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            console, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            console, _ = proc.communicate()
        seconds = time.monotonic() - t0
        rc_file, out_file = Path(share, "rc"), Path(share, "output.txt")
        rc_text = rc_file.read_text().strip() if rc_file.exists() else ""
        return Result(
            rc=int(rc_text) if rc_text.isdigit() else None,
            output=out_file.read_text(errors="replace") if out_file.exists() else "",
            console=console.decode(errors="replace")[-4000:],
            seconds=seconds,
        )


if __name__ == "__main__":  # a manual smoke test: python tests/vm/qemu.py 'uname -a'
    import sys

    r = run(" ".join(sys.argv[1:]) or "uname -a; modprobe ip_vs && ipvsadm -Ln")
    print(r.output or r.console, f"\nrc={r.rc} in {r.seconds:.1f}s")
