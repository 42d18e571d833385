import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def data_root() -> Path:
    from grouprank.config import default_data_root
    root = default_data_root()
    if not root.is_dir():
        pytest.fail(f"test collections not found at {root} (set GROUPRANK_DATA_ROOT)")
    return root


_cache: dict = {}


@pytest.fixture(scope="session")
def load():
    """Session-cached built-in collection loader."""
    from grouprank.collections import load_collection

    def _load(name: str):
        if name not in _cache:
            _cache[name] = load_collection(name)
        return _cache[name]
    return _load
