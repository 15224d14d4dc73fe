"""NumPyro programs inside expectations: sim, density, Trace and parameters."""

from __future__ import annotations

from ppl.gen._enumerate import infer_discrete as infer_discrete
from ppl.gen._enumerate import posterior_discrete as posterior_discrete
from ppl.gen._params import constrain as constrain
from ppl.gen._params import init_params as init_params
from ppl.gen._program import Family as Family
from ppl.gen._program import Trace as Trace
from ppl.gen._program import density as density
from ppl.gen._program import sim as sim
from ppl.gen._program import site_log_densities as site_log_densities

__all__ = [
    "Trace",
    "Family",
    "sim",
    "density",
    "site_log_densities",
    "init_params",
    "constrain",
    "infer_discrete",
    "posterior_discrete",
]
