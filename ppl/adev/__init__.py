"""ADEV: unbiased gradient estimators of expected values, by program transformation."""

from ppl.adev._expectation import Expectation as Expectation
from ppl.adev._expectation import expectation as expectation
from ppl.adev._log_prob import log_prob as log_prob
from ppl.adev._primitives import SiteInfo as SiteInfo
from ppl.adev._primitives import add_cost as add_cost
from ppl.adev._primitives import particles as particles
from ppl.adev._primitives import plate as plate
from ppl.adev._primitives import sample as sample
from ppl.adev._strategies import MVD as MVD
from ppl.adev._strategies import Baseline as Baseline
from ppl.adev._strategies import Detached as Detached
from ppl.adev._strategies import Draw as Draw
from ppl.adev._strategies import Enum as Enum
from ppl.adev._strategies import LeaveOneOut as LeaveOneOut
from ppl.adev._strategies import LocalStrategy as LocalStrategy
from ppl.adev._strategies import Reinforce as Reinforce
from ppl.adev._strategies import Reparam as Reparam
from ppl.adev._strategies import Strategy as Strategy
from ppl.adev._strategies import baseline as baseline
from ppl.adev._strategies import default_strategy as default_strategy
from ppl.adev._strategies import detached as detached
from ppl.adev._strategies import enum as enum
from ppl.adev._strategies import leave_one_out as leave_one_out
from ppl.adev._strategies import mvd as mvd
from ppl.adev._strategies import reinforce as reinforce
from ppl.adev._strategies import reparam as reparam
from ppl.adev._strategies import score as score

__all__ = [
    "SiteInfo",
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
]
