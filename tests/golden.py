"""Golden files: generated output compared byte for byte with a file kept in the repo.

`UPDATE_GOLDEN=1 pytest ...` rewrites the files instead; review the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path


def assert_golden(path: Path, actual: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once"
    expected = path.read_text()
    assert actual == expected, f"{path} differs (UPDATE_GOLDEN=1 rewrites it; review the diff)"
