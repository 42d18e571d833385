"""ONNX Runtime backend for sentence-transformers models (Transformer + Pooling [+ Normalize]).

Export (once per model fingerprint, into `<cache_dir>/onnx/<name>-<fingerprint>-v<N>/`):
  raw.onnx        torch.onnx export of the transformer (token embeddings out), dynamic batch/length
  model.onnx      raw.onnx fused by onnxruntime.transformers.optimizer (BERT-family models), fp32
  model-int8.onnx raw.onnx with per-channel dynamic int8 quantisation of MatMul weights
                  (embeddings and LayerNorm stay fp32; per-tensor quantisation costs ~0.04 cosine,
                  per-channel ~0.004)
  tokenizer files, meta.json (pooling, inputs, verification against torch)
Each export is checked against the torch model on probe sentences before it is published
(atomic rename), so a broken export never reaches the cache.
Pooling and normalisation run in numpy after the session.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .model_files import model_fingerprint

log = logging.getLogger(__name__)

# v2: exported with eager attention. transformers 5 defaults to SDPA, whose traced graph masks the
# (batch, heads, seq, seq) scores with IsNaN/Where passes that ORT cannot fuse into its Attention
# kernel: with it the int8 model spent ~38 % of its time there and ran no faster than torch.
EXPORT_VERSION = 2
FP32_FILE, INT8_FILE = "model.onnx", "model-int8.onnx"
_OPTIMIZABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "camembert", "electra", "mpnet"}
PROBES = [
    "hello world",
    "Vitamin D deficiency is associated with an increased risk of respiratory infections in adults.",
    "A randomized controlled trial of 1,200 patients showed no effect of the drug on mortality, "
    "but a reduction in hospital admissions among patients over sixty-five years of age. " * 3,
    "boundary layer transition on a flat plate at supersonic speeds",
    "x",
    "What is the role of chaperone proteins in protein folding and how do they prevent aggregation?",
]
MIN_COS = {FP32_FILE: 0.9999, INT8_FILE: 0.97}


def export_dir(model_path: str, cache_dir: Path) -> Path:
    name = Path(model_path).name or "model"
    return Path(cache_dir) / "onnx" / f"{name}-{model_fingerprint(model_path)}-v{EXPORT_VERSION}"


def _pool(h: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if mode == "mean":
        m = mask[..., None].astype(h.dtype)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return np.where(mask[..., None] > 0, h, -1e9).max(1)
    if mode == "lasttoken":
        last = mask.sum(1).astype(np.int64) - 1
        return h[np.arange(h.shape[0]), np.maximum(last, 0)]
    raise ValueError(f"pooling mode {mode!r} not supported by the onnx backend (use backend 'torch')")


def thread_budget() -> int:
    """OMP_NUM_THREADS when set to a positive number, else 0 (ONNX Runtime's default: one per core)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class OnnxBackend:
    def __init__(self, directory: Path, file: str, max_seq_length: int | None):
        import onnxruntime as ort
        from transformers import AutoTokenizer
        self.dir = Path(directory)
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.pooling = self.meta["pooling_mode"]
        self.input_names = self.meta["input_names"]
        self.dimension = int(self.meta["dimension"])
        self.max_seq_length = int(max_seq_length or self.meta["max_seq_length"])
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # no busy-wait between ops: batches are long, and on shared CPUs spinning threads steal
        # the cores the other workers need
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # the process's thread budget: Dask and Ray give each worker one (OMP_NUM_THREADS=1, which
        # torch follows and ONNX Runtime does not), so two workers on two cores do not each start a
        # thread per core and halve each other's speed (bench/results/scale.json)
        so.intra_op_num_threads = thread_budget()
        self.session = ort.InferenceSession(str(self.dir / file), so, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir), local_files_only=True)

    @classmethod
    def from_model(cls, model_path: str, quantize: bool, max_seq_length: int | None, cache_dir: Path) -> "OnnxBackend":
        d = export_dir(model_path, cache_dir)
        if not (d / "meta.json").exists():
            export(model_path, d)
        if quantize:
            v = json.loads((d / "meta.json").read_text()).get("verification", {}).get(INT8_FILE, {})
            if v.get("ok") is False:
                raise RuntimeError(f"the int8 ONNX export of {model_path} failed its check (min cosine to torch "
                                   f"{v.get('min_cos', 0):.4f} < {MIN_COS[INT8_FILE]}); use backend 'onnx'")
        return cls(d, INT8_FILE if quantize else FP32_FILE, max_seq_length)

    def _run_batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation="longest_first", max_length=self.max_seq_length,
                             return_tensors="np")
        feeds = {k: np.asarray(enc[k], dtype=np.int64) for k in self.input_names}
        h = self.session.run(None, feeds)[0]
        return _pool(h, feeds["attention_mask"], self.pooling)

    def encode(self, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers: less padding
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="Batches", total=len(starts))
        for s in starts:
            idx = order[s:s + batch_size]
            out[idx] = self._run_batch([texts[i] for i in idx])
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(n, 1e-12)


def _check_architecture(st) -> tuple[object, str]:
    mods = [type(m).__name__ for m in st]
    if not mods or mods[0] != "Transformer" or any(m not in ("Transformer", "Pooling", "Normalize") for m in mods):
        raise ValueError(f"onnx backend supports Transformer + Pooling [+ Normalize] models, this one is {mods}; "
                         f"use dense_backend='torch'")
    pooling = "mean"
    if len(st) > 1 and mods[1] == "Pooling":
        cfg = st[1].get_config_dict()
        pooling = cfg.get("pooling_mode", "mean")
        if isinstance(pooling, (list, tuple)):
            pooling = pooling[0] if len(pooling) == 1 else "+".join(pooling)
        if cfg.get("include_prompt") is False:
            raise ValueError("onnx backend: Pooling(include_prompt=False) is not supported; use 'torch'")
    _pool(np.zeros((1, 1, 1), np.float32), np.ones((1, 1), np.int64), pooling)  # raises if unsupported
    return st[0], pooling


def export(model_path: str, directory: Path) -> Path:
    """Export, optimise, quantise and verify; publish atomically into `directory`."""
    from sentence_transformers import SentenceTransformer

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        st = SentenceTransformer(model_path, device="cpu", local_files_only=True)
        transformer, pooling = _check_architecture(st)
        hf = transformer.auto_model.eval()
        tok = transformer.tokenizer
        raw = tmp / "raw.onnx"
        input_names = _trace(hf, tok, raw, model_path)
        fused = _fp32_model(hf, raw, tmp / FP32_FILE)
        _int8_model(raw, tmp / INT8_FILE)
        raw.unlink()
        tok.save_pretrained(str(tmp))
        max_len = int(st.max_seq_length or getattr(tok, "model_max_length", 512))
        meta = {"export_version": EXPORT_VERSION, "source": str(model_path), "pooling_mode": pooling,
                "input_names": input_names, "dimension": int(st.get_embedding_dimension()),
                "max_seq_length": max_len, "fused_fp32": fused, "verification": {}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        meta["verification"] = _verify(st, tmp, max_len, model_path)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, directory)
        except OSError:
            if not (directory / "meta.json").exists():
                raise
        return directory
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _trace(hf, tok, raw: Path, model_path: str) -> list[str]:
    """The transformer traced to ONNX at `raw` (token embeddings out, dynamic batch and length);
    -> the input names it takes."""
    import inspect

    import torch
    if hasattr(hf, "set_attn_implementation"):
        try:
            hf.set_attn_implementation("eager")  # see EXPORT_VERSION
        except (ValueError, NotImplementedError) as e:
            log.warning("eager attention unavailable for %s (%s); exporting the default attention", model_path, e)
    fwd = set(inspect.signature(hf.forward).parameters)
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                   if n in fwd and n in getattr(tok, "model_input_names", ["input_ids", "attention_mask"])]
    if "attention_mask" not in input_names:
        input_names.append("attention_mask")

    class _Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return self.m(**dict(zip(input_names, args))).last_hidden_state

    sample = tok(["a short sentence", "a somewhat longer sentence for the export trace"], padding=True,
                 return_tensors="pt")
    args = tuple(sample[n] for n in input_names)
    dyn = {n: {0: "batch", 1: "seq"} for n in input_names}
    dyn["token_embeddings"] = {0: "batch", 1: "seq"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Wrap(hf), args, str(raw), dynamo=False, input_names=input_names,
                          output_names=["token_embeddings"], dynamic_axes=dyn, opset_version=17,
                          do_constant_folding=True)
    return input_names


def _fp32_model(hf, raw: Path, out: Path) -> bool:
    """fp32: fuse attention / layer norm / gelu where onnxruntime knows the architecture (best
    effort: the raw export is correct); -> whether it was fused."""
    cfg = hf.config
    if getattr(cfg, "model_type", "") in _OPTIMIZABLE:
        try:
            from onnxruntime.transformers.optimizer import optimize_model
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = optimize_model(str(raw), model_type="bert", num_heads=int(cfg.num_attention_heads),
                                     hidden_size=int(cfg.hidden_size))
            opt.save_model_to_file(str(out))
            return True
        except Exception as e:  # noqa: BLE001
            log.warning("onnxruntime optimizer failed (%s); using the unfused export", e)
    shutil.copyfile(raw, out)
    return False


def _int8_model(raw: Path, out: Path) -> None:
    """Dynamic int8 quantisation of the MatMuls."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    # the quantizer logs a generic pre-processing hint through logging.warning() on the root
    # logger, which would also install a root handler (basicConfig): mute it for the call
    root = logging.getLogger()
    level, null = root.level, logging.NullHandler()
    root.addHandler(null)
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(raw), str(out), per_channel=True, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        root.removeHandler(null)


def _verify(st, folder: Path, max_len: int, model_path: str) -> dict:
    """Both exports against torch on the probe sentences (cosine); an fp32 export too far off is an
    error, an int8 one a warning (loading it refuses it)."""
    ref = st.encode(PROBES, convert_to_numpy=True, normalize_embeddings=True)
    out = {}
    for f in (FP32_FILE, INT8_FILE):
        got = OnnxBackend(folder, f, max_len).encode(PROBES, batch_size=4)
        cos = (got * ref).sum(1)
        out[f] = {"min_cos": float(cos.min()), "mean_cos": float(cos.mean()), "ok": bool(cos.min() >= MIN_COS[f])}
        if cos.min() < MIN_COS[f] and f == FP32_FILE:
            raise RuntimeError(f"ONNX export check failed for {f}: min cosine to torch {cos.min():.5f} "
                               f"< {MIN_COS[f]} (model {model_path})")
        if cos.min() < MIN_COS[f]:  # int8: the fp32 export stays usable; loading int8 raises
            log.warning("ONNX int8 export of %s is too far from torch (min cosine %.4f < %s): "
                        "backend 'onnx-int8' refuses it, 'onnx' (fp32) is fine", model_path, cos.min(), MIN_COS[f])
    return out
