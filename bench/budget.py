"""Does a larger time budget buy better laws? Quick ODEBench at several budgets, one table.

    python bench/budget.py                    # budgets 2, 10 and 30 s; clean and sigma 0.05 with half dropped
    python bench/budget.py --budgets 2,30

Runs ``bench/odebench.py --quick --no-baseline --time-budget B`` for each budget (same systems, data and
seeds) and prints reconstruction and generalisation accuracy per budget and setting, with the mean
seconds per system. Writes bench/results/budget.json and bench/results/budget.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(budget: float, workers: int, folder: Path) -> dict:
    out = folder / f"budget-{budget:g}.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "odebench.py"), "--quick", "--no-baseline",
                    "--time-budget", str(budget), "--workers", str(workers), "--out", str(out)], check=True)
    return json.loads(out.read_text())["summary"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="2,10,30", help="comma-separated time budgets in seconds")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "budget.json"))
    args = p.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in budgets:
            for setting, value in run(budget, args.workers, Path(tmp)).items():
                if not setting.startswith("hybrid "):
                    continue
                overall = value["all"]
                rows.append({"budget_s": budget, "setting": setting.removeprefix("hybrid "), "n": overall["n"],
                             "recon_acc": overall["recon_acc"], "gen_acc": overall["gen_acc"],
                             "seconds_per_system": overall["seconds_per_system"]})
    print("| time budget (s) | setting | recon. acc | gen. acc | s/system |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget_s']:g} | {r['setting']} | {r['recon_acc']:.2f} | {r['gen_acc']:.2f} | "
              f"{r['seconds_per_system']:.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python bench/budget.py --budgets " + args.budgets, "rows": rows},
                              indent=1) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        ax.plot([r["budget_s"] for r in mine], [r["gen_acc"] for r in mine], "o-", label=f"gen., {setting}")
        ax.plot([r["budget_s"] for r in mine], [r["recon_acc"] for r in mine], "s--", alpha=0.6,
                label=f"recon., {setting}")
    budgets = sorted({r["budget_s"] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("time budget (s)")
    ax.set_ylabel("accuracy (share with R² > 0.9)")
    ax.set_title("Quick ODEBench: accuracy against the time budget", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
