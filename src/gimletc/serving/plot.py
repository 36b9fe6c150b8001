"""A PNG of the serving search: every operating point that met the SLO, and the Pareto frontier
(tokens/s per user against tokens/s per chip)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

from gimletc._io import write_atomic
from gimletc.serving.search import ParetoPoint, SearchResult, pareto_front

__all__ = ["frontier_png", "plot_frontier"]


def frontier_png(points: Sequence[ParetoPoint], title: str = "serving Pareto frontier") -> bytes:
    """The plot as PNG bytes (matplotlib's Agg backend; no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    labels = sorted({p.label for p in points})
    cmap = matplotlib.colormaps["tab10"]
    for i, lab in enumerate(labels):
        pts = [p for p in points if p.label == lab]
        ax.scatter([p.tok_s_per_user for p in pts], [p.tok_s_per_chip for p in pts], s=18, alpha=0.55,
                   color=cmap(i % 10), label=lab if len(lab) <= 60 else lab[:57] + "...")
    front = pareto_front(points)
    if front:
        ax.plot([p.tok_s_per_user for p in front], [p.tok_s_per_chip for p in front], "-o", color="black",
                lw=1.5, ms=4, label="Pareto frontier")
    ax.set_xlabel("tokens/s per user (1 / median TPOT)")
    ax.set_ylabel("output tokens/s per chip")
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=10)
    ax.grid(True, alpha=0.3)
    if labels:
        ax.legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def plot_frontier(result: SearchResult, path: str | Path, title: str | None = None) -> None:
    """Save the search's operating points and frontier as a PNG at `path` (atomically)."""
    slo = result.slo.to_dict()
    parts = [f"{k[:-3].upper()} <= {v:g} ms" for k, v in slo.items() if k.endswith("_ms") and v is not None]
    t = title or f"operating points meeting {', '.join(parts)} for {slo['share']:.0%} of requests"
    write_atomic(path, frontier_png(result.points(), t))
