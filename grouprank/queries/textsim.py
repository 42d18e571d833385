"""The cheap lexical similarities used by dedup and the leakage guard.

The key of exact matching is `grouprank.text.normalize_query`: Unicode NFKC, casefold, every
punctuation character (Unicode category P*) replaced by a space, whitespace collapsed. Symbols
(`$`, `+`, `<`, `°`) and digits are kept ("up to $5 billion" and "up to 5 billion" stay different);
`%` and `#` are Unicode punctuation and become spaces.

`levenshtein` is the bit-parallel edit distance of Myers (1999) in Hyyrö's formulation, on Python
integers (no length limit): O(len(a) * ceil(len(b)/word)) machine operations, fast enough to
verify thousands of candidate pairs per second in pure Python.

`lexical_similarity` = max(normalised Levenshtein similarity, token Jaccard) of the normalised
texts: the first catches typos and small insertions, the second reordered words ("X is a Y
tumour suppressor" / "X is a tumour suppressor in Y"). Candidate pairs for it come from
`char_ngram_neighbors` (character 3-gram TF-IDF cosine, sparse), so a lexical check never needs
all pairs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from grouprank.text import inner_product_top_k, normalize_query, top_k_rows


def tokens(text: str) -> list[str]:
    """Tokens of the normalised text."""
    return normalize_query(text).split()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert/delete/substitute, unit costs), bit-parallel (Myers/Hyyrö)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def edit_similarity(a: str, b: str) -> float:
    """1 - levenshtein / max length (1.0 for two empty strings)."""
    n = max(len(a), len(b))
    return 1.0 if n == 0 else 1.0 - levenshtein(a, b) / n


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def lexical_similarity(a: str, b: str, *, normalized: bool = False) -> tuple[float, str]:
    """(similarity, which) with which in {"edit", "jaccard"}: the larger of the normalised edit
    similarity and the token Jaccard of the normalised texts."""
    na, nb = (a, b) if normalized else (normalize_query(a), normalize_query(b))
    e = edit_similarity(na, nb)
    j = jaccard(na.split(), nb.split())
    return (e, "edit") if e >= j else (j, "jaccard")


# --- candidate search ------------------------------------------------------------------------

def _char_ngrams(text: str, n: int = 3) -> list[str]:
    t = f" {text} "
    return [t[i:i + n] for i in range(max(1, len(t) - n + 1))]


def char_ngram_neighbors(queries: Sequence[str], pool: Sequence[str], k: int = 5, n: int = 3,
                         chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each (already normalised) text in `queries`, the `k` most similar texts of `pool` by
    TF-IDF-weighted character n-gram cosine. Returns (indices [len(queries), k'], scores), k' =
    min(k, len(pool)); rows are sorted by descending score. Sparse: cost grows with shared n-grams,
    not with len(queries) * len(pool) * vocabulary."""
    from scipy import sparse

    kk = min(k, len(pool))
    if kk == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
    vocab: dict[str, int] = {}

    def rows(texts, grow: bool):
        indptr, indices, data = [0], [], []
        for t in texts:
            counts: dict[int, int] = {}
            for g in _char_ngrams(t, n):
                j = vocab.get(g)
                if j is None:
                    if not grow:
                        continue
                    j = vocab[g] = len(vocab)
                counts[j] = counts.get(j, 0) + 1
            indices.extend(counts)
            data.extend(counts.values())
            indptr.append(len(indices))
        return indptr, indices, data

    pp = rows(pool, True)
    qp = rows(queries, False)
    V = len(vocab)
    P = sparse.csr_matrix((np.asarray(pp[2], np.float32), pp[1], pp[0]), shape=(len(pool), V))
    Q = sparse.csr_matrix((np.asarray(qp[2], np.float32), qp[1], qp[0]), shape=(len(queries), V))
    df = np.bincount(P.indices, minlength=V).astype(np.float32)
    idf = np.log((1.0 + len(pool)) / (1.0 + df)) + 1.0
    D = sparse.diags(idf)

    def l2(M):
        M = (M @ D).tocsr()
        norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
        return sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ M

    P, Q = l2(P), l2(Q)
    PT = P.T.tocsc()
    out_i = np.zeros((len(queries), kk), dtype=np.int64)
    out_s = np.zeros((len(queries), kk), dtype=np.float32)
    for s in range(0, len(queries), chunk):
        out_i[s:s + chunk], out_s[s:s + chunk] = top_k_rows((Q[s:s + chunk] @ PT).toarray(), kk)
    return out_i, out_s


def dense_neighbors(q: np.ndarray, p: np.ndarray, k: int = 5, chunk: int = 1024,
                    exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of rows of `q` against rows of `p` (normalised vectors -> cosine),
    exact, in chunks (`grouprank.text.inner_product_top_k`). With `exclude_self` (q is p) the
    diagonal is ignored."""
    return inner_product_top_k(q, p, k, chunk, exclude_self)
