"""The objective library: ``import ppl.objectives`` (the module of ``ppl.objectives.elbo``).

Each objective takes a ``model`` and a ``guide`` and returns a `ppl.Expectation` of
``(params, *args, **kwargs)`` to be maximized; see the "Objectives" docs page.
"""

from ppl.vi.objectives import diwhvi as diwhvi
from ppl.vi.objectives import dreg as dreg
from ppl.vi.objectives import elbo as elbo
from ppl.vi.objectives import hvi as hvi
from ppl.vi.objectives import iwae as iwae
from ppl.vi.objectives import iwhvi as iwhvi
from ppl.vi.objectives import log_weights as log_weights
from ppl.vi.objectives import renyi as renyi
from ppl.vi.objectives import vimco as vimco
from ppl.vi.objectives import wake_p as wake_p
from ppl.vi.objectives import wake_q as wake_q

__all__ = [
    "log_weights",
    "elbo",
    "iwae",
    "hvi",
    "iwhvi",
    "diwhvi",
    "wake_p",
    "wake_q",
    "vimco",
    "renyi",
    "dreg",
]
