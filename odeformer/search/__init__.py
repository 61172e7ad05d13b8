"""The search for laws, one module per concept (as PySINDy's package-per-concept layout):

- ``problem.py``: :class:`Problem`, the data in both frames, held-out points, noise level, operators, clock
- proposal sources, each a class with ``propose(problem, earlier) -> list[Proposal]``:
  ``transformer.py`` (beam search), ``sparse.py`` (polynomial/trigonometric libraries, the whole
  sparsity path), ``saturating.py`` (saturation, Hill, exponential terms with fitted parameters),
  ``forcing.py`` (periodic forcing at frequencies found by a Lomb-Scargle periodogram)
- ``library.py`` and ``regression.py``: term libraries and the sparse regression the library sources share
- ``refit.py``: constants refitted on derivatives, then on the re-integrated trajectories
- ``ranking.py``: the noise-aware information criterion on held-out points
- ``windows.py``: unpredictable (chaotic) data ranked over windows of the trajectories, each with its own
  fitted start
- ``prune.py``: smaller variants of the best candidates
- ``units.py``: the best candidates with their coefficients near +-1 in the user's units fixed at exactly that
- ``schedule.py``: when the stages after the proposals end, from the refit costs measured in the fit
- ``local.py``: local search around the best candidates (one-component edits, components mixed across
  proposals), screened by ``linear.py`` (a component's coefficients by linear least squares)
- ``candidate.py``: a ranked candidate in the user's units; ``engine.py``: :class:`Search`, which runs it all

A new proposal source is one file: a class with a ``name`` and ``propose``, passed to ``Search``.
"""

from odeformer.search.candidate import Candidate
from odeformer.search.engine import Search
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal

__all__ = ["Candidate", "Problem", "Proposal", "Search"]
