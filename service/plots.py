"""PNG of the observed data against the simulated best candidate, for the upload page."""

from __future__ import annotations

import io

import numpy as np

from odeformer.csv_io import SystemData


def trajectory_png(reg, data: SystemData) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (t, x) in enumerate(data.trajectories):
        dense = np.linspace(t[0], t[-1], 300)
        try:
            sim = reg.predict(dense, x[0])
        except RuntimeError:
            sim = None
        for i, name in enumerate(data.variables):
            c = colors[i % len(colors)]
            ax.plot(t, x[:, i], "o", ms=3, color=c, alpha=0.6, label=f"{name} (data)" if k == 0 else None)
            if sim is not None:
                ax.plot(dense, sim[:, i], "-", color=c, label=f"{name} (model)" if k == 0 else None)
    ax.set_xlabel("t")
    ax.set_title(f"{data.system}: data vs best candidate (R² = {reg.equations_[0].r2:.4f})", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
