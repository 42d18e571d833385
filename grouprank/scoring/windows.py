"""RankGPT's sliding windows for listwise scoring."""
from __future__ import annotations


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) slices of a list of n, bottom-up: [(n-w, n), (n-w-s, n-s), …, (0, ·)]; one
    window (0, n) when the list fits. Each window reorders its slice of the running list, so the
    best documents are carried up by up to `window - stride` places per step."""
    if n <= window:
        return [(0, n)]
    if stride < 1:
        raise ValueError(f"stride must be >= 1 (got {stride})")
    out, end = [], n
    while True:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            return out
        end -= stride
