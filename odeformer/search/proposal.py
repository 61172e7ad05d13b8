"""A proposal: a system's components (expression trees) and constants, and the source that made it."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

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


T = TypeVar("T")


def best_of_each_first(items: list[T], group: Callable[[T], Hashable], score: Callable[[T], float]) -> list[T]:
    """``items`` by ascending score, except that the best of every group comes first (groups that fail
    differently each get a turn before any gets a second)."""
    ranked = sorted(items, key=score)
    firsts: dict = {}
    for item in ranked:
        firsts.setdefault(group(item), item)
    head = list(firsts.values())
    return head + [item for item in ranked if all(item is not h for h in head)]
