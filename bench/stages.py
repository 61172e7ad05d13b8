"""Where a fit's time budget goes: when each stage of the search ends, as a share of the budget.

    python bench/stages.py                    # quick ODEBench, clean and sigma 0.05 with half dropped, 2 and 10 s
    python bench/stages.py --budgets 2 --setting 0.05:0.5

Fits run one at a time in this process (timings need an otherwise idle machine). For each budget and
setting: the median (and largest) share of the budget at which each stage ended (``Problem.spent``), how
many fits climbed, and how well the schedule's reserve (odeformer/search/schedule.py) matched what the
unit step and the final refits then took. Writes bench/results/stages.json and bench/results/stages.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import odebench as ob  # noqa: E402

from odeformer import ODERegressor  # noqa: E402

STAGES = ("proposals", "refits", "pruning", "climb", "units", "final")


def run(budget: float, sigma: float, drop: float, systems: list[dict], reg_options: dict) -> list[dict]:
    rows = []
    for s in tqdm(systems, desc=f"{budget:g} s, sigma {sigma:g}, dropped {drop:g}"):
        f = ob.lambdify_system(s["substituted"][0], s["dim"])
        clean = ob.integrate(f, s["init"][0], ob.T_EVAL)
        t, x = ob.corrupt(clean, sigma, drop, seed=1000 * s["id"] + int(100 * sigma) + int(10 * drop))
        reg = ODERegressor(time_budget_s=budget, **reg_options).fit(t, x)
        spent = reg.problem_.spent
        later = spent["final"] - spent.get("climb", spent["pruning"]) if "final" in spent else None
        rows.append({"id": s["id"], "dim": s["dim"], **{k: v / budget for k, v in spent.items() if k in STAGES},
                     "reserved_s": spent.get("reserved"), "later_s": later})
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for stage in STAGES:
        ends = [r[stage] for r in rows if stage in r]
        if ends:
            out[stage] = {"n": len(ends), "median": float(np.median(ends)), "max": float(np.max(ends))}
    pairs = [(r["later_s"], r["reserved_s"]) for r in rows if r["later_s"] is not None and r["reserved_s"]]
    ratio = [used / kept for used, kept in pairs]
    out["later_over_reserved"] = {"median": float(np.median(ratio)), "max": float(np.max(ratio)),
                                  "over": int(np.sum(np.array(ratio) > 1.0)), "n": len(ratio)} if ratio else None
    out["over_budget"] = int(sum(r["final"] > 1.0 for r in rows if "final" in r))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="2,10", help="comma-separated time budgets in seconds")
    p.add_argument("--setting", action="append", metavar="SIGMA:DROP", help="default: 0:0 and 0.05:0.5")
    p.add_argument("--beam-size", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "stages.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # as in bench/odebench.py's workers
    settings = [tuple(float(v) for v in s.split(":")) for s in (args.setting or ["0:0", "0.05:0.5"])]
    systems = ob.load_systems(True)
    results = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for sigma, drop in settings:
            rows = run(budget, sigma, drop, systems, {"beam_size": args.beam_size})
            results.append({"budget_s": budget, "sigma": sigma, "drop": drop, "summary": summary(rows), "rows": rows})
    print("| budget (s) | setting | " + " | ".join(STAGES)
          + " | fits climbing | later stages / reserve (median, max, over) | over budget |")
    print("|---" * (len(STAGES) + 5) + "|")
    for r in results:
        s = r["summary"]
        cells = [f"{s[k]['median']:.2f} ({s[k]['max']:.2f})" if k in s else "—" for k in STAGES]
        lr = s["later_over_reserved"]
        ratio = f"{lr['median']:.2f}, {lr['max']:.2f}, {lr['over']} of {lr['n']}" if lr else "—"
        climbing = s["climb"]["n"] if "climb" in s else 0
        print(f"| {r['budget_s']:g} | σ {r['sigma']:g}, dropped {r['drop']:g} | " + " | ".join(cells)
              + f" | {climbing} of {len(r['rows'])} | {ratio} | {s['over_budget']} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", "bench/stages.py", *sys.argv[1:]]),
                               "results": results}, indent=1) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(results)))
    colours = plt.get_cmap("tab10").colors
    for i, r in enumerate(results):
        start = 0.0
        for j, stage in enumerate(STAGES):
            if stage not in r["summary"]:
                continue
            end = max(start, r["summary"][stage]["median"])
            ax.barh(i, end - start, left=start, color=colours[j], label=stage if i == 0 or stage == "climb" else None)
            start = end
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(results)), [f"{r['budget_s']:g} s, σ {r['sigma']:g}/{r['drop']:g}" for r in results])
    ax.set_xlabel("share of the time budget (median over quick ODEBench) at which each stage ends")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
