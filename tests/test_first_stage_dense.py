"""DenseEncoder with the bundled all-MiniLM-L6-v2 (offline): torch and ONNX backends."""
import json

import numpy as np
import pytest

from grouprank.first_stage import dense
from grouprank.first_stage.dense import DenseEncoder, default_model_path, get_encoder, resolve_model

TEXTS = ["Protein folding is assisted by molecular chaperones.",
         "Myocardial infarction raises the risk of heart failure.",
         "Boundary layer transition on a flat plate at supersonic speed.",
         "short"]


@pytest.fixture(scope="module")
def torch_enc():
    return get_encoder("all-MiniLM-L6-v2", "torch")


def test_default_model_is_the_bundled_copy():
    p = default_model_path()
    assert (p / "config.json").exists() and (p / "modules.json").exists()
    assert resolve_model("all-MiniLM-L6-v2") == str(p)
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(p)


def test_lazy_construction_and_model_id():
    e = DenseEncoder("/nonexistent/model-dir", backend="onnx-int8")   # nothing loads yet
    assert e.n_encode_calls == 0
    a = DenseEncoder()
    b = DenseEncoder()
    assert a.model_id == b.model_id and a.model_id.startswith("all-MiniLM-L6-v2@")
    assert "torch" in a.model_id and "seq256" in a.model_id
    assert DenseEncoder(backend="onnx-int8").model_id != a.model_id
    assert DenseEncoder(max_seq_length=128).model_id != a.model_id
    assert DenseEncoder(query_prompt="query: ").model_id != a.model_id
    with pytest.raises(ValueError):
        DenseEncoder(backend="tensorrt")


def test_torch_encoder(torch_enc):
    d = torch_enc.encode_documents(TEXTS)
    q = torch_enc.encode_queries(["how do chaperones help proteins fold", "heart attack"])
    assert d.dtype == np.float32 and d.shape == (4, 384) and torch_enc.dimension == 384
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    sims = q @ d.T
    assert sims[0].argmax() == 0 and sims[1].argmax() == 1
    assert torch_enc.encode_queries([]).shape == (0, 384)
    # per-process cache: same settings share the encoder and the loaded model
    assert get_encoder("all-MiniLM-L6-v2", "torch") is torch_enc
    other = DenseEncoder(batch_size=8)
    assert other._load() is torch_enc._load()
    # a prompt is prepended and changes the vector
    pq = DenseEncoder(query_prompt="query: ").encode_queries(["heart attack"])
    assert not np.allclose(pq, q[1:2])


def test_onnx_backends_match_torch(torch_enc, tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    ref = torch_enc.encode_documents(TEXTS)
    fp32 = DenseEncoder(backend="onnx", cache_dir=cache)
    int8 = DenseEncoder(backend="onnx-int8", cache_dir=cache)
    a, b = fp32.encode_documents(TEXTS), int8.encode_documents(TEXTS)
    assert a.shape == b.shape == (4, 384)
    assert (a * ref).sum(1).min() > 0.9999
    assert (b * ref).sum(1).min() > 0.97
    (export,) = list((cache / "onnx").iterdir())
    meta = json.loads((export / "meta.json").read_text())
    assert meta["pooling_mode"] == "mean" and set(meta["verification"]) == {"model.onnx", "model-int8.onnx"}
    assert (export / "model-int8.onnx").stat().st_size < (export / "model.onnx").stat().st_size
    # a new process-level load reuses the export on disk
    mtime = (export / "model.onnx").stat().st_mtime_ns
    dense._MODELS.clear()
    DenseEncoder(backend="onnx", cache_dir=cache).encode_queries(["again"])
    assert (export / "model.onnx").stat().st_mtime_ns == mtime


def test_model_fingerprint_is_shared_with_onnx_exports_and_forgettable(tmp_path):
    """`model_files` holds the fingerprint cache that dense, the ONNX export directory and
    retriever_training (which drops an entry through `dense.forget_model` after saving a model over
    a path) all see."""
    from grouprank.first_stage import model_files, onnx_backend
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}')
    fp = dense.model_fingerprint(str(d))
    assert fp == model_files.model_fingerprint(str(d)) and len(fp) == 12
    assert onnx_backend.export_dir(str(d), tmp_path).name == f"m-{fp}-v{onnx_backend.EXPORT_VERSION}"
    (d / "config.json").write_text('{"a": 2}')
    assert dense.model_fingerprint(str(d)) == fp            # cached per process ...
    dense.forget_model(str(d.resolve()))                   # ... until forgotten (retriever_training)
    fp2 = dense.model_fingerprint(str(d))
    assert fp2 != fp and onnx_backend.export_dir(str(d), tmp_path).name.endswith(f"-{fp2}-v{onnx_backend.EXPORT_VERSION}")
    (d / "config.json").write_text('{"a": 3}')
    model_files.forget_fingerprint(str(d))
    assert dense.model_fingerprint(str(d)) not in (fp, fp2)


def test_bf16_backend_and_auto(torch_enc, monkeypatch):
    ref = torch_enc.encode_documents(TEXTS)
    bf = DenseEncoder(backend="torch-bf16")
    assert "torch-bf16" in bf.model_id and bf.model_id != torch_enc.model_id  # its own index cache key
    got = bf.encode_documents(TEXTS)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * ref).sum(1)
    assert cos.min() > 0.99 and not np.allclose(got, ref, atol=1e-6)  # close to float32, but bf16 weights ran
    # auto: bf16 only where the CPU has it natively, never on a GPU device
    monkeypatch.setattr(dense, "_cpu_has_bf16", lambda: True)
    assert DenseEncoder(backend="auto").backend == "torch-bf16"
    assert DenseEncoder(backend="auto", device="cuda").backend == "torch"
    monkeypatch.setattr(dense, "_cpu_has_bf16", lambda: False)
    assert DenseEncoder(backend="auto").backend == "onnx"
