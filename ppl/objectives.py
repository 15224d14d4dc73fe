"""The objective library: ``import ppl.objectives`` (the module of ``ppl.objectives.elbo``).

Each objective takes a ``model`` and a ``guide`` and returns a `ppl.Expectation` of
``(params, *args, **kwargs)`` to be maximized; see the "Objectives" docs page. The
objectives live in ``ppl.vi.objectives``; this module re-exports all of them.
"""

from ppl.vi.objectives import *  # noqa: F403 - the whole library, as listed in __all__
from ppl.vi.objectives import __all__ as __all__
