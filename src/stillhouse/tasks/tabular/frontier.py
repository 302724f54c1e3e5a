"""The mitigation frontier: what passing the gate costs, and which setting a run packages.

Each setting (:mod:`stillhouse.tasks.tabular.mitigate`) has a teacher and a student measured on the held-out rows
(AUC, cost-weighted error, the worst demographic-parity ratio and equalized-odds difference with their 95 %
intervals) and the gate's verdict on its student. The rule (:func:`choose`): the most accurate (highest student
AUC) setting whose student passes; if none passes, the *nearest miss* — the fewest failed checks, then the
smallest total shortfall (how far the failed figures are from their limits, each relative to its limit) — is named
with what it misses by.
The choice is made on the same held-out rows that measure it, so its figures are optimistic by the selection; the
intervals say how far to trust them.
"""

from __future__ import annotations

import html
import math

FIGURES = ("auc", "cost_weighted_error", "demographic_parity_ratio", "equalized_odds_difference")


def shortfall(gate: dict) -> float:
    """How far the failed checks are from their limits, each relative to its limit (AUC, calibration and ratio
    misses are on different scales), added up; a figure that was not measured: infinite."""
    total = 0.0
    for check in gate["checks"]:
        if not check["passed"]:
            total += (math.inf if check["value"] is None
                      else abs(check["value"] - check["threshold"]) / max(abs(check["threshold"]), 0.01))
    return total


def choose(rows: list[dict]) -> dict:
    """``rows``: one per setting in grid order (``none`` first), each ``{"setting", "student": {"auc", ...},
    "gate": {"verdict", "checks"}}``. Returns ``{"chosen", "passed", "misses"}``: the passing setting with the
    highest student AUC (the earlier, weaker setting on a tie), else the nearest miss and its failed checks."""
    passing = [r for r in rows if r["gate"]["verdict"] == "passed"]
    if passing:
        best = max(passing, key=lambda r: r["student"]["auc"])  # max keeps the first of equals
        return {"chosen": best["setting"], "passed": True, "misses": []}
    nearest = min(rows, key=lambda r: (sum(not c["passed"] for c in r["gate"]["checks"]), shortfall(r["gate"])))
    misses = [{"limit": c["limit"], "threshold": c["threshold"], "value": c["value"],
               "by": None if c["value"] is None else abs(c["value"] - c["threshold"])}
              for c in nearest["gate"]["checks"] if not c["passed"]]
    return {"chosen": nearest["setting"], "passed": False, "misses": misses}


def cost_of(rows: list[dict], chosen: str) -> dict:
    """The chosen student's figures against the unmitigated student's (``none``, the first row)."""
    base, pick = rows[0]["student"], next(r for r in rows if r["setting"] == chosen)["student"]
    return {"auc": pick["auc"] - base["auc"],
            "cost_weighted_error": (pick["cost_weighted_error"] - base["cost_weighted_error"]
                                    if pick.get("cost_weighted_error") is not None else None)}


def describe_choice(frontier: dict) -> str:
    """One sentence: what was packaged and what it cost, or that nothing passes and by how much."""
    choice, cost = frontier["choice"], frontier["cost"]
    title = next(r["describe"] for r in frontier["rows"] if r["setting"] == choice["chosen"])
    if choice["passed"]:
        if choice["chosen"] == "none":
            return "The unmitigated student passes the gate: no mitigation was needed, and none was packaged."
        return (f"Packaged: {title}, the most accurate setting whose student passes the gate; it costs "
                f"{-cost['auc']:+.4f} AUC against the unmitigated student.")
    misses = "; ".join(_miss(m) for m in choice["misses"])
    return (f"No setting passes the gate. The nearest miss, {title}, was packaged marked `gate: failed`: {misses}.")


def _miss(miss: dict) -> str:
    value = "not measured" if miss["value"] is None else f"{miss['value']:.4f}"
    return f"{miss['limit']} {value} vs {miss['threshold']:g}" + ("" if miss["by"] is None else
                                                                  f" (misses by {miss['by']:.4f})")


def frontier_plot(frontier: dict, gate_limits: dict) -> str:
    """Student (filled) and teacher (hollow) AUC against the worst demographic-parity ratio and equalized-odds
    difference per setting, with the 95 % intervals of the fairness figure and the gate's limits drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stillhouse.evaluate.report import _png

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("demographic_parity_ratio", "min_demographic_parity_ratio", "demographic-parity ratio (worst group)"),
              ("equalized_odds_difference", "max_equalized_odds_difference", "equalized-odds difference (worst)"))
    for ax, (figure, limit, label) in zip(axes, panels):
        for k, row in enumerate(frontier["rows"]):
            colour = f"C{k}"
            for model, marker in (("teacher", "o"), ("student", "s")):
                figures = row[model]
                if figures.get(figure) is None:
                    continue
                ci = figures.get(f"{figure}_ci95")
                # a percentile interval need not hold its point (a gap near 0 is biased up): never a negative bar
                xerr = [[max(0.0, figures[figure] - ci[0])], [max(0.0, ci[1] - figures[figure])]] if ci else None
                ax.errorbar(figures[figure], figures["auc"], xerr=xerr, fmt=marker, color=colour, capsize=3,
                            mfc=colour if model == "student" else "none",
                            label=f"{row['setting']} ({model})")
        if gate_limits.get(limit) is not None:
            ax.axvline(gate_limits[limit], color="#b00020", linestyle="--", linewidth=1)
        if gate_limits.get("min_auc") is not None:
            ax.axhline(gate_limits["min_auc"], color="#b00020", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("AUC")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle("Mitigation frontier (dashed: the gate's limits)")
    fig.tight_layout()
    return _png(fig)


def _cell(figures: dict, figure: str) -> str:
    value = figures.get(figure)
    if value is None:
        return "—"
    ci = figures.get(f"{figure}_ci95")
    return f"{value:.4f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


FRONTIER_HEADER = ["setting", "model", "AUC", "cost / row", "DP ratio [95 % CI]", "EO difference [95 % CI]", "gate"]


def frontier_rows(frontier: dict) -> list[list[str]]:
    chosen = frontier["choice"]["chosen"]
    out = []
    for row in frontier["rows"]:
        mark = " (packaged)" if row["setting"] == chosen else ""
        for model in ("teacher", "student"):
            out.append([row["describe"] + mark, model, *(_cell(row[model], f) for f in FIGURES),
                        row["gate"]["verdict"] if model == "student" else ""])
    return out


def frontier_html(frontier: dict, gate_limits: dict) -> str:
    if frontier is None or len(frontier["rows"]) < 2:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in FRONTIER_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in frontier_rows(frontier))
    return (f'<h2 id="frontier">Mitigation frontier</h2><p>{html.escape(describe_choice(frontier))}</p>'
            f"<table><tr>{head}</tr>{body}</table>"
            f'<p><img alt="mitigation frontier" src="{frontier_plot(frontier, gate_limits)}"></p>'
            '<p class="note">Each setting is chosen and measured on the same held-out rows: the packaged one\'s '
            "figures are optimistic by that choice; where an interval contains a limit, too few rows were measured "
            "to tell.</p>")
