"""The user API: ``ODERegressor().fit(t, x)`` -> ranked equations, sklearn-style.

    from odeformer import ODERegressor
    model = ODERegressor()                      # the default checkpoint
    model.fit(t, x, variables=["S", "I"])       # one trajectory, or lists of trajectories
    model.equations_[0].rhs                     # {"S": "...", "I": "..."}
    model.predict(t_new, x0)                    # simulate the best candidate

Pipeline: validate and sort the data (DESIGN.md 3.1) -> a :class:`~odeformer.search.Problem` (normalised
into the training frame, held-out points set aside) -> :class:`~odeformer.search.Search` with the chosen
proposal sources -> candidates in the user's units, ranked by a noise-aware criterion.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sympy as sp

from data_gen.expressions import var_name
from odeformer import ambiguity, display
from odeformer import checkpoint as ckpt
from odeformer.search import Candidate, Problem, Search
from odeformer.search.candidate import LOW_CONFIDENCE_R2
from odeformer.search.forcing import Forcing
from odeformer.search.local import LocalSearch
from odeformer.search.saturating import Saturating
from odeformer.search.sparse import SparseRegression
from odeformer.search.transformer import TransformerPrior, TransformerProposals
from odeformer.validation import InputError, check_variable_names, prepare

#: right-hand side evaluations ``predict`` allows before it gives up
MAX_PREDICT_EVALUATIONS = 200_000
#: proposal sources by name, in the order they run (later ones see earlier proposals)
SOURCES = ("transformer", "sparse", "saturating", "forcing")

__all__ = ["ODERegressor", "Candidate", "InputError", "SOURCES"]


class ODERegressor:
    """Symbolic regression of dx/dt = f(x, t) from trajectories. See the module docstring."""

    def __init__(self, checkpoint: str | Path | None = None, beam_size: int = 16, top_k: int = 5,
                 time_budget_s: float = 10.0, allowed_operators: Sequence[str] | None = None,
                 refit: bool = True, sources: Sequence[str] = SOURCES, device: str = "cpu",
                 decoding: str = "beam", temperature: float = 0.8, seed: int = 0, experiment: bool = False,
                 experiment_bounds: dict | None = None, experiment_max_duration: float | None = None,
                 edit_prior: bool = False):
        self.checkpoint = checkpoint
        # the transformer's log-probability of each edited skeleton reorders the local search's edits;
        # off by default: with the shipped weights it changed no quick-ODEBench or forced generalisation and cost
        # a fifth more time (docs/inference.md, step 7)
        self.edit_prior = bool(edit_prior)
        self.beam_size = beam_size  # with decoding="sample": the number of samples per group
        if decoding not in ("beam", "sample"):
            raise ValueError(f"decoding: choose 'beam' or 'sample', got {decoding!r}")
        if not (isinstance(temperature, (int, float)) and 0 < temperature <= 10):
            raise ValueError(f"temperature must be in (0, 10], got {temperature!r}")
        self.decoding, self.temperature, self.seed = decoding, float(temperature), seed
        self.top_k = top_k
        self.time_budget_s = time_budget_s
        self.allowed_operators = allowed_operators
        self.refit = refit  # off: rank the decoded constants as they are (the ablation)
        unknown = set(sources) - set(SOURCES)
        if unknown or not sources:
            raise ValueError(f"sources: choose from {list(SOURCES)}, got {list(sources)}")
        self.sources = tuple(sources)
        self.device = device
        # experiment=True: fit() also sets experiment_ = suggest_experiment(...) with these bounds (by
        # variable name; names a system lacks are ignored, so one set serves a batch of systems)
        self.experiment = bool(experiment)
        if experiment_bounds is not None and not isinstance(experiment_bounds, dict):
            raise InputError("experiment_bounds: give {variable: (lower, upper)}")
        self.experiment_bounds = experiment_bounds
        self.experiment_max_duration = ambiguity.check_duration(experiment_max_duration, "experiment_max_duration")
        self._ckpt: ckpt.Checkpoint | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> ODERegressor:
        return cls(checkpoint=path, **kwargs)

    @classmethod
    def from_checkpoint(cls, loaded: ckpt.Checkpoint, **kwargs) -> ODERegressor:
        """A regressor sharing an already loaded model (the service makes one per request)."""
        reg = cls(checkpoint=loaded.path, **kwargs)
        reg._ckpt = loaded
        return reg

    @property
    def model_(self) -> ckpt.Checkpoint:
        if self._ckpt is None:
            self._ckpt = ckpt.load(self.checkpoint or ckpt.default_path(), self.device)
        return self._ckpt

    def _operators(self) -> set[str]:
        """Operators of the checkpoint's grammar, narrowed by ``allowed_operators``."""
        known = self.model_.grammar.output_operators
        if self.allowed_operators is None:
            return set(known)
        unknown = set(self.allowed_operators) - known
        if unknown:
            raise InputError(f"allowed_operators: unknown {sorted(unknown)} (this model knows {sorted(known)})")
        return set(self.allowed_operators)

    def _search(self) -> Search:
        made = {"transformer": lambda: TransformerProposals(self.model_, self.beam_size, self.decoding,
                                                            self.temperature, self.seed, self.device),
                "sparse": SparseRegression, "saturating": Saturating, "forcing": Forcing}
        return Search([made[name]() for name in SOURCES if name in self.sources], refit=self.refit, top_k=self.top_k,
                      local=LocalSearch(prior=TransformerPrior(self.model_, self.device) if self.edit_prior else None))

    def fit(self, t, x, variables: Sequence[str] | None = None) -> ODERegressor:
        """Fit one trajectory (``t`` (n,), ``x`` (n,) or (n, d)) or several (lists of those)."""
        start = time.monotonic()
        c = self.model_
        data = prepare(t, x, c.grammar.max_dim)
        d = data[0][1].shape[1]
        names = list(variables) if variables is not None else [var_name(i) for i in range(d)]
        if len(names) != d:
            raise InputError(f"{len(names)} variable names for {d} variables")
        check_variable_names(names)
        problem = Problem(data, names, self._operators(), c.grammar["system"]["time_share"] > 0,
                          self.time_budget_s, start=start)
        self.problem_ = problem
        self.equations_ = self._search().run(problem)
        self.variables_ = names
        self.normalization_ = problem.norm
        self.low_confidence_ = not self.equations_ or self.equations_[0].r2 < LOW_CONFIDENCE_R2
        # rivals within the noise margin that predict other futures (docs/ambiguity.md): every fit
        self.ambiguity_ = ambiguity.assess(problem, self.equations_)
        self.ambiguous_ = self.ambiguity_.ambiguous
        for cand, gap in zip(self.equations_, self.ambiguity_.gaps):
            cand.score_gap = gap
        self.experiment_ = None
        if self.experiment and self.equations_:
            bounds = {k: v for k, v in (self.experiment_bounds or {}).items() if k in names} or None
            self.experiment_ = self.suggest_experiment(bounds, self.experiment_max_duration)
        self.elapsed_s_ = time.monotonic() - start
        return self

    @property
    def rivals_(self) -> list[int]:
        """Ranks (from 0, best first) of the candidates that rival the best (``ambiguous_``)."""
        return list(self.ambiguity_.rivals) if getattr(self, "ambiguity_", None) else []

    def suggest_experiment(self, bounds=None, max_duration: float | None = None, duration: float | None = None,
                           seed: int = 0) -> ambiguity.Experiment:
        """The initial state and recording length whose predictions best separate the best candidate
        from its rivals (docs/ambiguity.md). ``bounds``: ``{name: (lower, upper)}`` or one pair per
        variable, in the data's units (default: each variable's observed range widened by its width on
        each side); ``max_duration``: the longest recording to consider (default twice the observed
        span), or ``duration`` to fix it. Returns an :class:`~odeformer.ambiguity.Experiment` with the
        rivals' predicted trajectories from that state; raises InputError for bad bounds or durations."""
        self._candidate(0)
        user_bounds = ambiguity.check_bounds(bounds, self.variables_)
        max_duration = ambiguity.check_duration(max_duration, "max_duration")
        duration = ambiguity.check_duration(duration, "duration")
        return ambiguity.suggest(self.problem_, self.equations_, self.ambiguity_, user_bounds, max_duration,
                                 duration, seed)

    # --- results
    def _candidate(self, k: int) -> Candidate:
        if not getattr(self, "equations_", None):
            raise RuntimeError("no fitted candidates: call fit() first")
        return self.equations_[k]

    def predict(self, t, x0, k: int = 0) -> np.ndarray:
        """Simulate candidate ``k`` (best first) from ``x0`` at times ``t``; shape (len(t), n_variables)."""
        cand = self._candidate(k)
        syms = [sp.Symbol(n) for n in self.variables_]
        f = sp.lambdify((sp.Symbol("t"), syms), cand.expressions, "numpy")
        from scipy.integrate import solve_ivp

        t = np.asarray(t, dtype=np.float64)
        calls = 0

        def rhs(tt, y):
            nonlocal calls
            calls += 1
            if calls > MAX_PREDICT_EVALUATIONS:  # a stiff or chattering candidate must not hang the caller
                raise RuntimeError(f"simulation failed: more than {MAX_PREDICT_EVALUATIONS} evaluations")
            return np.asarray(f(tt, y), dtype=float).ravel()

        sol = solve_ivp(rhs, (t[0], t[-1]), np.atleast_1d(np.asarray(x0, dtype=np.float64)), t_eval=t,
                        method="LSODA", rtol=1e-6, atol=1e-9)
        if sol.status != 0:
            raise RuntimeError(f"simulation failed: {sol.message}")
        return sol.y.T

    def sympy(self, k: int = 0) -> list[sp.Expr]:
        return list(self._candidate(k).expressions)

    def latex(self, k: int = 0, digits: int | None = 4) -> str:
        """Candidate ``k`` as LaTeX, constants to ``digits`` significant digits (None: all of them)."""
        rhs = display.latex_rhs(self._candidate(k).expressions, self.variables_, digits)
        return r" \\ ".join(rf"\dot{{{sp.latex(sp.Symbol(n))}}} = {rhs[n]}" for n in self.variables_)

    def __str__(self) -> str:
        """The ranked candidates, constants to 4 significant digits (``equations_[k].rhs`` has them all)."""
        if not getattr(self, "equations_", None):
            return "ODERegressor (not fitted)"
        lines = []
        for i, cand in enumerate(self.equations_):
            lines.append(f"#{i + 1}  r2={cand.r2:.4f}  complexity={cand.complexity}{'  pareto' if cand.pareto else ''}")
            lines += [f"    d{n}/dt = {display.rhs_string(e, digits=4)}" for n, e in zip(cand.names, cand.expressions)]
        return "\n".join(lines)

    def print(self) -> None:
        print(self)
