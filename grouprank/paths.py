"""Where things are: the repository root and the test collections (read in place, never copied)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_root() -> Path:
    """Test collections live in ../shared/data beside the repository (never copied into it).
    Override with GROUPRANK_DATA_ROOT."""
    env = os.environ.get("GROUPRANK_DATA_ROOT")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")
