"""Settings every suite shares."""

from __future__ import annotations

import os

from hypothesis import settings

# In CI the property tests draw the same examples every run, so a submission passes or fails
# on its own merits; on a developer's machine they explore afresh each time (that is where
# they found the planner's history-dependent reasons).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
