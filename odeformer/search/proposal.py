"""A proposal: a system's components (expression trees) and constants, and the source that made it."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_gen.expressions import Tree, operators


@dataclass
class Proposal:
    components: tuple[Tree, ...]
    constants: list[float] = field(default_factory=list)
    source: str = ""
    #: lower is more promising, comparable among the library sources (their BIC against one derivative
    #: estimate); None for the transformer's
    prior: float | None = None
    #: its constants include inner ones from a scanned grid, to be tuned before the trajectory fit
    tuned: bool = False

    def uses_only(self, ops: set[str]) -> bool:
        return all(operators(c) <= ops for c in self.components)
