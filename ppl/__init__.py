"""ppl: programmable variational inference for JAX and NumPyro."""

from ppl import comparison as comparison
from ppl import objectives as objectives
from ppl import parallel as parallel
from ppl.adev import Expectation as Expectation
from ppl.adev import _strategies
from ppl.adev import add_cost as add_cost
from ppl.adev import expectation as expectation
from ppl.adev import log_prob as log_prob
from ppl.adev import particles as particles
from ppl.adev import plate as plate
from ppl.adev import sample as sample

# every strategy (the registry in ppl/adev/_strategies.py lists them once)
from ppl.adev._strategies import *  # noqa: F403
from ppl.comparison import compare as compare
from ppl.gen import Trace as Trace
from ppl.gen import constrain as constrain
from ppl.gen import density as density
from ppl.gen import infer_discrete as infer_discrete
from ppl.gen import init_params as init_params
from ppl.gen import sim as sim
from ppl.vi import FitResult as FitResult
from ppl.vi import Importance as Importance
from ppl.vi import Marginal as Marginal
from ppl.vi import Normalize as Normalize
from ppl.vi import Trainer as Trainer
from ppl.vi import TrainState as TrainState
from ppl.vi import fit as fit
from ppl.vi import importance as importance
from ppl.vi import marginal as marginal
from ppl.vi import normalize as normalize
from ppl.vi import to_inference_data as to_inference_data

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Expectation",
    "expectation",
    "sample",
    "add_cost",
    "particles",
    "plate",
    "log_prob",
    "Trace",
    "sim",
    "density",
    "infer_discrete",
    "init_params",
    "constrain",
    "Marginal",
    "Normalize",
    "marginal",
    "normalize",
    "objectives",
    "to_inference_data",
    "fit",
    "FitResult",
    "Trainer",
    "TrainState",
    "importance",
    "Importance",
    "compare",
    "comparison",
    "parallel",
] + _strategies.__all__
