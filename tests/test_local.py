"""The local search around the best candidates (odeformer/search/local.py): it repairs a nearly right
skeleton, mixes components of different proposals, and a larger evaluation budget never ends worse."""

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

from data_gen.expressions import CONST, to_sympy
from odeformer.search import Problem, Proposal, Search
from odeformer.search.local import LocalSearch, rewrites

OPS = {"add", "sub", "mul", "div", "neg", "sin", "cos", "exp", "pow2", "pow3", "inv", "tanh"}
NAMES = ["theta", "omega"]


def pendulum(noise: float = 0.0, seed: int = 0) -> list:
    t = np.linspace(0, 10, 150)
    sol = solve_ivp(lambda _, y: [y[1], -0.3 * y[1] - 4 * np.sin(y[0])], (0, 10), [1.0, 0.0], t_eval=t,
                    rtol=1e-10, atol=1e-12).y.T
    rng = np.random.default_rng(seed)
    return [(t, sol + noise * rng.standard_normal(sol.shape) * sol.std(axis=0))]


class Fixed:
    """A proposal source that proposes the systems it was given, and nothing else."""

    name = "fixed"

    def __init__(self, *systems):
        self.systems = systems

    def propose(self, problem, earlier):
        return [Proposal(comps, list(consts), self.name) for comps, consts in self.systems]


#: theta' = omega, omega' = c*omega + c*cos(theta): the pendulum with cos where sin belongs
WRONG_UNARY = (("x_1", ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("cos", "x_0")))), [-0.3, -4.0])


def best_omega(cands) -> str:
    return cands[0].rhs["omega"]


def test_a_wrong_unary_operator_is_repaired():
    """Seeded only with cos where sin belongs, the local search returns the law; without it, the search
    can only return the wrong skeleton."""
    without = Search([Fixed(WRONG_UNARY)]).run(Problem(pendulum(), NAMES, OPS, False, 60.0))
    assert "cos" in best_omega(without) and "sin" not in best_omega(without)
    cands = Search([Fixed(WRONG_UNARY)], local=LocalSearch()).run(Problem(pendulum(), NAMES, OPS, False, 60.0))
    assert "sin(theta)" in best_omega(cands) and "cos" not in best_omega(cands), best_omega(cands)
    assert cands[0].source == "local" and cands[0].r2 > 0.9999
    assert cands[0].score > without[0].score + 10


def test_components_of_two_proposals_are_mixed():
    """One proposal has the right theta', the other the right omega': the climb puts them together."""
    right_first = (("x_1", ("mul", CONST, "x_0")), [-4.0])
    right_second = ((("mul", CONST, "x_0"), ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("sin", "x_0")))),
                    [0.5, -0.3, -4.0])
    cands = Search([Fixed(right_first, right_second)], local=LocalSearch()).run(
        Problem(pendulum(), NAMES, OPS, False, 60.0))
    theta = sp.parse_expr(cands[0].rhs["theta"], local_dict={"omega": sp.Symbol("omega")})
    assert theta.free_symbols == {sp.Symbol("omega")} and abs(float(theta.subs("omega", 1)) - 1) < 1e-4
    assert "sin(theta)" in best_omega(cands) and cands[0].r2 > 0.9999, cands[0].rhs


def test_a_larger_evaluation_budget_never_ends_worse():
    """With the budget counted in trajectory refits (deterministic, the clock far away), the best
    criterion value never falls as the budget grows, and the largest one improves on no local search."""
    data = pendulum(noise=0.02, seed=3)
    best = []
    for budget in (0, 1, 2, 4, 8, 32):
        search = Search([Fixed(WRONG_UNARY)], local=LocalSearch(), max_evaluations=budget)
        best.append(search.run(Problem(data, NAMES, OPS, False, 600.0))[0].score)
    assert all(b >= a for a, b in zip(best, best[1:])), best
    assert best[-1] > best[0] + 10, best


@pytest.mark.parametrize("tree, expected", [
    (("cos", "x_0"), ("sin", "x_0")),  # a unary operator swapped
    (("mul", "x_0", "x_1"), ("mul", ("div", "x_0", ("add", CONST, "x_0")), "x_1")),  # a saturation motif
])
def test_rewrites_include_the_repair(tree, expected):
    motif = {"x_0": [(("div", "x_0", ("add", CONST, "x_0")), (1.0,)), (("sin", "x_0"), ())], "x_1": []}
    out = rewrites(tree, (), OPS, motif)
    assert expected in [new for new, _, _ in out]
    for new, consts, _ in out:
        to_sympy(new, list(consts))  # every rewrite is a well-formed tree with its constants


def test_no_motif_inside_a_transcendental_function():
    motif = {"x_0": [(("exp", ("mul", CONST, "x_0")), (1.0,))]}
    out = [new for new, _, _ in rewrites(("tanh", ("mul", CONST, "x_0")), (2.0,), OPS, motif)]
    assert ("tanh", ("mul", CONST, ("exp", ("mul", CONST, "x_0")))) not in out
    assert ("sin", ("mul", CONST, "x_0")) in out
