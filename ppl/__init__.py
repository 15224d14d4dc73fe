"""ppl: programmable variational inference for JAX and NumPyro."""

from ppl import compare as compare
from ppl import objectives as objectives
from ppl import parallel as parallel
from ppl.adev import MVD as MVD
from ppl.adev import Baseline as Baseline
from ppl.adev import Detached as Detached
from ppl.adev import Draw as Draw
from ppl.adev import Enum as Enum
from ppl.adev import Expectation as Expectation
from ppl.adev import LeaveOneOut as LeaveOneOut
from ppl.adev import LocalStrategy as LocalStrategy
from ppl.adev import Reinforce as Reinforce
from ppl.adev import Reparam as Reparam
from ppl.adev import Strategy as Strategy
from ppl.adev import add_cost as add_cost
from ppl.adev import baseline as baseline
from ppl.adev import default_strategy as default_strategy
from ppl.adev import detached as detached
from ppl.adev import enum as enum
from ppl.adev import expectation as expectation
from ppl.adev import leave_one_out as leave_one_out
from ppl.adev import log_prob as log_prob
from ppl.adev import mvd as mvd
from ppl.adev import particles as particles
from ppl.adev import plate as plate
from ppl.adev import reinforce as reinforce
from ppl.adev import reparam as reparam
from ppl.adev import sample as sample
from ppl.adev import score as score
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
    "Strategy",
    "LocalStrategy",
    "Draw",
    "Reparam",
    "Reinforce",
    "Baseline",
    "Enum",
    "MVD",
    "LeaveOneOut",
    "Detached",
    "detached",
    "reparam",
    "reinforce",
    "baseline",
    "enum",
    "mvd",
    "leave_one_out",
    "default_strategy",
    "score",
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
    "importance",
    "Importance",
    "compare",
    "parallel",
]
