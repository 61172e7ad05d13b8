"""Write the in-distribution benchmark set: systems of the default grammar, in the ODEBench format.

    python bench/make_indist.py            # 500 systems -> bench/data/in_distribution.json

Drawn with :data:`IN_DISTRIBUTION_SEED`, a seed no training run may take (``odeformer train`` refuses
it, like the validation seed), one system per skeleton, each with two initial conditions whose
trajectories passed the generator's filters. The file is committed, so the set stays fixed when the
generator changes; rerunning this script rewrites it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_gen.expressions import split_constants, to_sympy  # noqa: E402
from data_gen.grammar import default_grammar  # noqa: E402
from data_gen.pipeline import generate_chunk  # noqa: E402
from odeformer.samples import IN_DISTRIBUTION_SEED  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--out", default=str(ROOT / "bench" / "data" / "in_distribution.json"))
    args = p.parse_args()
    grammar = default_grammar()
    systems, seen = [], set()
    for index in itertools.count():
        for s in generate_chunk(grammar, IN_DISTRIBUTION_SEED, index).systems:
            if s.skeleton.key in seen or len(s.x0) < 2:
                continue
            seen.add(s.skeleton.key)
            parts = split_constants(s.skeleton.components, list(s.constants))
            rhs = [str(to_sympy(c, k)) for c, k in zip(s.skeleton.components, parts)]
            systems.append({"id": 1000 + len(systems), "dim": s.skeleton.dim, "t_end": round(float(s.t_end), 6),
                            "substituted": [rhs], "init": np.round(s.x0[:2], 6).tolist()})
            if len(systems) == args.n:
                break
        if len(systems) == args.n:
            break
    meta = {"description": "Systems of the default grammar (data_gen/grammars/default.toml), drawn with the "
                           f"reserved seed {IN_DISTRIBUTION_SEED} by bench/make_indist.py; one per skeleton.",
            "dims": {str(d): sum(s["dim"] == d for s in systems) for d in sorted({s["dim"] for s in systems})}}
    Path(args.out).write_text(json.dumps({"meta": meta, "systems": systems}, indent=1))
    print(f"wrote {len(systems)} systems to {args.out}: {meta['dims']}")


if __name__ == "__main__":
    main()
