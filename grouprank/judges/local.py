"""The offline local judge (NOT an LLM): the public names, from the modules that define them.

- `local_scorer`       `LocalScorer` (features from BM25 + all-MiniLM-L6-v2 (+ e5), calibrated
                       to 0–10), `e5_available`, `TEMPLATE_VERSION`
- `local_calibration`  `Calibration`, `fit_calibration`, the shipped `DEFAULT_CALIBRATIONS`,
                       `default_calibration`, `FEATURES_BASE` / `FEATURES_E5`
- `local_cache`        `VectorCache`, the persistent document-embedding cache
- `local_judge`        `LocalJudge`, JUDGMENTS rows from a scorer

Importing it sets OMP_WAIT_POLICY=PASSIVE if unset (see `local_scorer`).
"""
from __future__ import annotations

from .local_cache import VectorCache
from .local_calibration import (DEFAULT_CALIBRATIONS, FEATURES_BASE, FEATURES_E5, Calibration,
                                default_calibration, fit_calibration)
from .local_judge import LocalJudge
from .local_scorer import TEMPLATE_VERSION, LocalScorer, e5_available

__all__ = ["Calibration", "DEFAULT_CALIBRATIONS", "FEATURES_BASE", "FEATURES_E5", "LocalJudge", "LocalScorer",
           "TEMPLATE_VERSION", "VectorCache", "default_calibration", "e5_available", "fit_calibration"]
