"""Whether this machine can run the tests that build hosts out of network namespaces.

One answer for every suite: a test skips only when a prerequisite truly cannot exist
here, and the reason names it.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def why_no_netns(prefix: str, tools: tuple[str, ...] = ("ip",)) -> str | None:
    """None when root, the tools (apt-packages.txt) and namespaces are all there;
    else the reason to skip. The probe namespace is `<prefix>probe`, deleted at once."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs the {tool} command (apt-packages.txt)"
    name = f"{prefix}probe"
    probe = subprocess.run(["ip", "netns", "add", name], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.decode().strip()}"
    return None
