"""ADEV: unbiased gradient estimators of expected values, by program transformation."""

from __future__ import annotations

from ppl.adev import _strategies
from ppl.adev._expectation import Expectation as Expectation
from ppl.adev._expectation import expectation as expectation
from ppl.adev._log_prob import log_prob as log_prob
from ppl.adev._primitives import SiteInfo as SiteInfo
from ppl.adev._primitives import add_cost as add_cost
from ppl.adev._primitives import particles as particles
from ppl.adev._primitives import plate as plate
from ppl.adev._primitives import sample as sample

# the strategies (their base classes, and each registered strategy's class and
# constructor): listed once, by the registry in _strategies.py
from ppl.adev._strategies import *  # noqa: F403

__all__ = [
    "SiteInfo",
    "Expectation",
    "expectation",
    "sample",
    "add_cost",
    "particles",
    "plate",
    "log_prob",
] + _strategies.__all__
