"""The strategy registry: every registered strategy is exported, documented, and reads
back from its text form."""

import re
from pathlib import Path

import equinox as eqx
import jax
import pytest

import ppl
import ppl.adev
from ppl.comparison import parse_strategy

DOCS = Path(__file__).resolve().parents[2] / "docs"

# one instance of each registered strategy, arguments included where it takes some
EXAMPLES = {
    "reparam": [ppl.reparam],
    "reinforce": [ppl.reinforce],
    "baseline": [ppl.baseline(ppl.reinforce, -2.5), ppl.baseline(ppl.reinforce, 1, learn=True)],
    "enum": [ppl.enum, ppl.Enum(max_values=16)],
    "mvd": [ppl.mvd],
    "leave_one_out": [ppl.leave_one_out(4)],
    "detached": [ppl.detached],
}


def test_the_examples_cover_the_registry():
    assert set(EXAMPLES) == set(ppl.STRATEGIES)


def test_exports_list_the_registry():
    from ppl.adev import _strategies

    registered = {n for cls in ppl.STRATEGIES.values() for n in (cls.__name__, cls.name)}
    base = {"Strategy", "LocalStrategy", "Draw", "STRATEGIES", "default_strategy", "score"}
    assert set(_strategies.__all__) == base | registered


@pytest.mark.parametrize("name", sorted(ppl.STRATEGIES))
def test_exported(name):
    cls = ppl.STRATEGIES[name]
    for module in (ppl, ppl.adev):
        assert {cls.__name__, name} <= set(module.__all__)
        assert getattr(module, cls.__name__) is cls
    constructor = getattr(ppl, name)
    made = constructor if isinstance(constructor, ppl.Strategy) else None
    assert made is None or type(made) is cls
    assert all(type(example) is cls for example in EXAMPLES[name])


@pytest.mark.parametrize("name", sorted(ppl.STRATEGIES))
def test_documented(name):
    cls = ppl.STRATEGIES[name]
    api = (DOCS / "api.md").read_text()
    members = set(re.findall(r"^\s+- (\w+)$", api, flags=re.MULTILINE))
    assert {name, cls.__name__} <= members, f"docs/api.md lacks {name} or {cls.__name__}"
    strategies = (DOCS / "strategies.md").read_text()
    assert re.search(rf"^## `{name}\b", strategies, flags=re.MULTILINE), (
        f"docs/strategies.md has no section on {name}"
    )
    assert f"`ppl.{name}" in strategies, f"docs/strategies.md's table lacks ppl.{name}"


@pytest.mark.parametrize(
    "strategy", [s for examples in EXAMPLES.values() for s in examples], ids=repr
)
def test_text_round_trip(strategy):
    text = strategy.to_text()
    parsed = parse_strategy(text)
    assert type(parsed) is type(strategy)
    assert eqx.tree_equal(
        jax.tree.map(float, parsed), jax.tree.map(float, strategy), typematch=False
    )
    assert parsed.to_text() == text


def test_array_baseline_has_no_text_form():
    with pytest.raises(ValueError, match="no text form"):
        ppl.baseline(ppl.reinforce, jax.numpy.ones(3)).to_text()


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="'reparam' is taken by Reparam"):

        class Mine(ppl.LocalStrategy):
            name = "reparam"


def test_subclass_that_draws_is_not_drawn_in_place():
    class Shifted(ppl.Reparam):
        def draw(self, key, distribution):
            return ppl.Draw(distribution.rsample(key) + 1.0)

    class Plain(ppl.Reparam):
        pass

    assert ppl.reparam.draws_in_place and Plain().draws_in_place
    assert not Shifted().draws_in_place
