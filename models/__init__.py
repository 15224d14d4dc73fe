"""The ppl model zoo: one package per published model, built on the public ppl API.

Each package registers a `ZooModel` here on import; ``ppl zoo list`` shows them.
"""

from models._registry import REGISTRY as REGISTRY
from models._registry import ZooModel as ZooModel
from models._registry import register as register

__all__ = ["REGISTRY", "ZooModel", "register"]
from models import air as air  # noqa: F401
from models import ard_vae as ard_vae  # noqa: F401
from models import fbm_sde as fbm_sde  # noqa: F401
from models import mult_vae as mult_vae  # noqa: F401
from models import pv_rnn as pv_rnn  # noqa: F401
from models import ssvi as ssvi  # noqa: F401
from models import vble as vble  # noqa: F401
