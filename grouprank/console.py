"""A quiet console off a terminal: no progress bar of the libraries (a log file, CI, a Prefect
worker's output are read as text, where each bar redraw is one more line).

`quiet_progress_bars()` (called by the command-line entry points and the flows) does nothing on a
terminal; elsewhere it sets the libraries' own switches: the environment variables they read when
they are imported (`HF_HUB_DISABLE_PROGRESS_BARS` also rules transformers' bars,
`HF_DATASETS_DISABLE_PROGRESS_BARS`, and `TQDM_DISABLE` for bars made with plain tqdm, such as
transformers' GGUF conversion), and, for a library already imported, its function
(`transformers.utils.logging.disable_progress_bar()`, `datasets.disable_progress_bars()`,
`huggingface_hub.utils.disable_progress_bars()`). A value the user set wins. The trainers take
`disable_tqdm` from `on_terminal()`, and report their metrics through the project's logger
(`grouprank.trainer_support`), so no metrics dict is printed.
"""
from __future__ import annotations

import os
import sys

SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


def on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def quiet_progress_bars(force: bool = False) -> bool:
    """Turn the libraries' progress bars off unless stderr is a terminal (`force`: also on one).
    Returns whether they were turned off."""
    if on_terminal() and not force:
        return False
    for k in SWITCHES:
        os.environ.setdefault(k, "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog
        tlog.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets
        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    return True
