"""Constructs, objectives, training and posterior export."""

from __future__ import annotations

from ppl.vi import objectives as objectives
from ppl.vi._constructs import Marginal as Marginal
from ppl.vi._constructs import Normalize as Normalize
from ppl.vi._constructs import marginal as marginal
from ppl.vi._constructs import normalize as normalize
from ppl.vi._fit import FitResult as FitResult
from ppl.vi._fit import fit as fit
from ppl.vi._importance import Importance as Importance
from ppl.vi._importance import importance as importance
from ppl.vi._posterior import to_inference_data as to_inference_data
from ppl.vi._training import Trainer as Trainer
from ppl.vi._training import TrainState as TrainState

__all__ = [
    "objectives",
    "Marginal",
    "Normalize",
    "marginal",
    "normalize",
    "to_inference_data",
    "fit",
    "FitResult",
    "Trainer",
    "TrainState",
    "importance",
    "Importance",
]
