"""The ppl model zoo: one package per published model, built on the public ppl API.

Each package registers a `ZooModel` here on import; ``ppl zoo list`` shows them.
"""

from ppl_zoo._registry import REGISTRY as REGISTRY
from ppl_zoo._registry import ZooModel as ZooModel
from ppl_zoo._registry import register as register

__all__ = ["REGISTRY", "ZooModel", "register"]
from ppl_zoo import air as air  # noqa: F401
from ppl_zoo import ard_vae as ard_vae  # noqa: F401
from ppl_zoo import fbm_sde as fbm_sde  # noqa: F401
from ppl_zoo import mult_vae as mult_vae  # noqa: F401
from ppl_zoo import pv_rnn as pv_rnn  # noqa: F401
from ppl_zoo import ssvi as ssvi  # noqa: F401
from ppl_zoo import vble as vble  # noqa: F401
