"""The report's figures: Table 4 (or the 8 x 8 switch grid) coloured by verdict, curves over epochs, singular
spectra, and for a comparison the configs' curves overlaid on one axis each. Every text is at least 8 pt; a cell
whose seeds disagree is coloured ``mixed``."""

import math
from pathlib import Path

import pandas as pd

from ..config import SWITCHES
from . import factorial as fa
from .cells import combo
from .stats import mean_ci
from .table4 import REG_OF_SWITCHES, REGS, SHORT, TABLES, disagrees, in_geometry, row_label

COLORS = {"ok": "#66bb6a", "dimensional_collapse": "#ffca28", "collapse": "#ef5350", "diverged": "#ab47bc",
          "mixed": "#90caf9", "failed": "#9e9e9e", "pending": "#f5f5f5"}
FONT = 8  # pt, the smallest text in any figure


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT + 1, "xtick.labelsize": FONT, "ytick.labelsize": FONT,
                         "legend.fontsize": FONT, "axes.titlesize": FONT + 1})
    return plt


def combo_label(method: str, c: tuple) -> str:
    return f"{method} " + (" ".join(SHORT[t] for t, on in zip(SWITCHES, c) if on) or "-")


def table_png(s: dict, mode: str) -> str:
    return f"table4_{s['slug']}.png" if mode == "auto" else f"table4_{s['slug']}_{mode}.png"


def _legend(ax):
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=v) for v, c in COLORS.items()], loc="upper center",
              bbox_to_anchor=(0.5, -0.01), ncol=4, fontsize=FONT + 1, frameon=False)


def _save(plt, fig, path: Path, dpi: int = 100) -> None:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _finish_grid(plt, fig, ax, width: int, height: int, title: str, path: Path) -> None:
    """Frame a grid of verdict cells, add the legend and write the figure."""
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.set_title(title, pad=22, fontsize=FONT + 3)
    _legend(ax)
    _save(plt, fig, path)


def table_figure(plt, s: dict, mode: str, ref: pd.DataFrame, path: Path) -> None:
    """The rows x 3 table (Table 4 or beyond it), ours and the paper's in each cell, a black frame where collapse
    disagrees."""
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(12, 1.06 * len(ref)))  # Table 4's 8 rows: 8.5 in
    for i, row in enumerate(ref.index):
        ax.text(-0.05, i + 0.5, row_label(ref, row), ha="right", va="center", fontsize=FONT + 2)
        for j, reg in enumerate(REGS):
            c, paper = s["tables"][mode][(row, reg)], ref.loc[row, reg]
            flag = disagrees(c, paper)
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLORS[c["color"]], edgecolor="black" if flag else
                                   "white", lw=2.5 if flag else 1))
            text = c["text"].replace(" (", "\n(")  # the remarks on their own line: cells are narrow
            ax.text(j + 0.5, i + 0.5, f"{text}\npaper: {paper or '—'}" + ("\n(!) disagrees" if flag else ""),
                    ha="center", va="center", fontsize=FONT)
    for j, reg in enumerate(REGS.values()):
        ax.text(j + 0.5, -0.1, reg, ha="center", va="bottom", fontsize=FONT + 3)
    title = TABLES[ref.attrs["table"]]
    _finish_grid(plt, fig, ax, 3, len(ref), f"{title}, ours ({s['slug']}, reg_geometry={mode}) vs paper, "
                 f"coloured by our verdict\nours: linear top-1 %, mean ± 95% t interval over seeds; [n]: between "
                 f"the baselines", path)


def factorial_figure(plt, cells: dict, title: str, path: Path) -> None:
    """8 x 8 grid: rows are the ME/SG/PR settings, columns the BN/Var/Cov settings."""
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(16, 11))
    bits = [tuple(bool(i >> (2 - k) & 1) for k in range(3)) for i in range(7, -1, -1)]
    name = lambda names, b: " ".join(n for n, on in zip(names, b) if on) or "-"  # noqa: E731
    for i, a in enumerate(bits):
        ax.text(-0.05, i + 0.5, name(("ME", "SG", "PR"), a), ha="right", va="center", fontsize=FONT + 2)
        for j, b in enumerate(bits):
            c = cells.get(a + b)
            if i == 0:
                ax.text(j + 0.5, -0.1, name(("BN", "Var", "Cov"), b), ha="center", va="bottom", fontsize=FONT + 2)
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLORS[c["color"]] if c else "white",
                                   edgecolor="white"))
            if c:
                text = c["text"].replace(" (", "\n(").replace(", ", ",\n")  # one note a line: cells are narrow
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=FONT)
    _finish_grid(plt, fig, ax, 8, 8, f"Verdict over the six switches ({title})\nlinear top-1 %, mean ± 95% t "
                 f"interval over seeds", path)


def _empty_panel(ax, runs: list[dict]) -> None:
    """Why a panel has no line: the runs failed, were read from a runs.csv that kept no curves, or are pending."""
    status = ("failed" if any(r["status"] == "failed" for r in runs) else
              "curve not kept (runs.csv)" if runs and all(r["source"] for r in runs) else
              "not run" if not runs else "pending")
    ax.text(0.5, 0.5, status, transform=ax.transAxes, ha="center", va="center", color="gray", fontsize=FONT)
    ax.set_xticks([])
    ax.set_yticks([])


def curves_figure(plt, panels: list, key: str, ref_key: str | None, ylabel: str, path: Path,
                  log: bool = False) -> None:
    """One small plot per cell, one line per seed, coloured by the run's verdict."""
    ncols = 3 if len(panels) <= 24 else 6
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), squeeze=False,
                             layout="constrained")
    for ax, (title, runs) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=FONT)
        for r in (r for r in runs if r["curve"]):
            epoch = [c["epoch"] for c in r["curve"]]
            ax.plot(epoch, [c.get(key, math.nan) for c in r["curve"]], marker=".", lw=1,
                    color=COLORS.get(r["verdict"] or "failed"), label=f"seed {r['seed']}")
            if ref_key:
                ax.plot(epoch, [c.get(ref_key, math.nan) for c in r["curve"]], ls="--", lw=0.8, color="black")
            if log and any((c.get(key) or 0) > 0 for c in r["curve"]):
                ax.set_yscale("log")
        if not any(r["curve"] for r in runs):
            _empty_panel(ax, runs)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.supxlabel("epoch", fontsize=FONT + 1)
    fig.supylabel(ylabel, fontsize=FONT + 1)
    _save(plt, fig, path, dpi=80)


def spectra_figure(plt, s: dict, ref: pd.DataFrame, path: Path) -> None:
    """Sorted eigenvalues of the embedding covariance (log scale), one panel per Var/Cov setting; a collapsed
    run's spectrum is dashed, and the axis label says so only where one is drawn."""
    groups = {}
    for r in s["runs"]:
        if r["spectrum"] and r["techniques"] and not r["baseline"]:
            groups.setdefault((r["techniques"]["var"], r["techniques"]["cov"]), []).append(r)
    keys = sorted(groups, key=lambda k: (k[0] + k[1], k[0])) or [(False, False)]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.5), squeeze=False, layout="constrained")
    dashed = False
    for ax, key in zip(axes.flat, keys):
        ax.set_title(REGS.get(REG_OF_SWITCHES.get(key), "Cov Reg only"), fontsize=FONT + 2)
        for r in groups.get(key, []):
            label = row_label(ref, r["cell"][0]) if r["cell"] else combo_label(r["method"], combo(r))
            collapsed = r["verdict"] == "collapse"
            dashed |= collapsed
            ax.semilogy([max(v, 1e-12) for v in r["spectrum"]], lw=1, ls="--" if collapsed else "-",
                        label=f"{label} s{r['seed']}")
        if key in groups:
            ax.legend(fontsize=FONT, ncol=2)
        else:
            ax.text(0.5, 0.5, "no spectra (runs.csv keeps none)", transform=ax.transAxes, ha="center",
                    color="gray", fontsize=FONT)
        ax.set_xlabel("index (sorted)")
    axes.flat[0].set_ylabel("covariance eigenvalue" + (" (dashed: collapsed run)" if dashed else ""))
    _save(plt, fig, path, dpi=90)


def _mean_curve(runs: list[dict], key: str) -> tuple[list, list, list]:
    """Epochs, the mean over seeds and its 95% t half-width (0 for one seed) of one curve."""
    epochs = sorted({c["epoch"] for r in runs for c in r["curve"]})
    stats = [mean_ci([c.get(key) for r in runs for c in r["curve"] if c["epoch"] == e]) for e in epochs]
    keep = [(e, m, h or 0.0) for e, (m, h, _) in zip(epochs, stats) if m is not None]
    return [k[0] for k in keep], [k[1] for k in keep], [k[2] for k in keep]


OVERLAID = (("knn_top1", "kNN top-1 % (held-out)"), ("z_std", "embedding std (l2-normalized)"),
            ("rank_z", "RankMe of the embeddings"))


def overlaid_figure(plt, cells: list, title: str, path: Path) -> None:
    """One axis per metric, every config's curve on it (mean over seeds, shaded 95% t interval), one legend."""
    fig, axes = plt.subplots(1, len(OVERLAID), figsize=(5 * len(OVERLAID), 4.2), squeeze=False,
                             layout="constrained")
    for ax, (key, name) in zip(axes.flat, OVERLAID):
        for label, _, runs, _ in cells:
            e, m, h = _mean_curve([r for r in runs if r["curve"]], key)
            if not e:
                continue
            (line,) = ax.plot(e, m, marker=".", lw=1.2, label=f"{label} (n={sum(bool(r['curve']) for r in runs)})")
            ax.fill_between(e, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)], alpha=0.2,
                            color=line.get_color())
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs, not fractions
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=FONT + 1)
    else:
        for ax in axes.flat:
            _empty_panel(ax, [r for _, _, runs, _ in cells for r in runs])
    fig.suptitle(f"{title}: mean over seeds, shaded 95% t interval", fontsize=FONT + 2)
    _save(plt, fig, path)


def panels_of(s: dict, ref: pd.DataFrame) -> list:
    """(title, runs) per cell: each Table 4 cell (the default geometry's 24, then the other geometries'
    regularized ones), then each off-table switch combination."""
    panels = []
    for mode in s["tables"]:
        panels += [(f"{row_label(ref, row)} | {REGS[reg]}" + ("" if mode == "auto" else f" [{mode}]"),
                    [r for r in s["runs"] if r["cell"] == (row, reg) and in_geometry(r, mode)])
                   for row in ref.index for reg in REGS if mode == "auto" or reg != "none"]
    for method, cells in s["factorial"].items():
        mine = [r for r in s["runs"] if r["method"] == method and r["techniques"]]
        panels += [(combo_label(method, c), [r for r in mine if not r["cell"] and combo(r) == c])
                   for c in cells if not any(r["cell"] and combo(r) == c for r in mine)]
    return panels


def figure_names(s: dict) -> dict:
    """{role: file name} of a setting's figures: ``main`` (None: no figure) leads the report, the others follow
    its details. Curve and spectrum figures only where some run kept curves (a runs.csv keeps none)."""
    slug, curves = s["slug"], any(r["curve"] for r in s["runs"])
    names = {"main": table_png(s, "auto") if s["tables"] else f"curves_{slug}.png" if s["compare"] and curves
             else None}
    names |= {f"table4_{m}": table_png(s, m) for m in list(s["tables"])[1:]}
    names |= {f"interactions_{m}": f"interactions_{slug}_{m}.png" for m in s["analysis"]}
    names |= {f"factorial_{m}": f"factorial_{slug}_{m}.png" for m in s["factorial"]}
    if curves and not s["compare"]:
        names |= {k: f"{k}_{slug}.png" for k in ("std", "scale", "rank")}
    if any(r["spectrum"] for r in s["runs"]):
        names["spectra"] = f"spectra_{slug}.png"
    if names["main"] is None:  # a factorial leads with its interactions, else its grid of verdicts
        lead = next((k for k in names if k.startswith(("interactions_", "factorial_"))), None)
        names["main"] = names.pop(lead) if lead else None
    return names


def write_figures(s: dict, ref: pd.DataFrame, out: Path) -> None:
    """Every figure ``figure_names`` lists for the setting, into ``out``."""
    plt, slug, names = pyplot(), s["slug"], set(figure_names(s).values())
    for mode in s["tables"]:
        table_figure(plt, s, mode, ref, out / table_png(s, mode))
    for method, cells in s["factorial"].items():
        factorial_figure(plt, cells, f"{slug}, {method} recipe", out / f"factorial_{slug}_{method}.png")
        if method in s["analysis"]:
            fa.heatmap_figure(plt, s["analysis"][method], f"Interactions on collapse, {slug}, {method} recipe",
                              out / f"interactions_{slug}_{method}.png")
    if f"curves_{slug}.png" in names:
        overlaid_figure(plt, s["comparison"]["cells"], f"Training curves, {slug}", out / f"curves_{slug}.png")
    if f"std_{slug}.png" in names:
        panels = panels_of(s, ref)
        curves_figure(plt, panels, "z_std", "z_std_ref", "embedding std (dashed: 1/sqrt(d))",
                      out / f"std_{slug}.png")
        curves_figure(plt, panels, "z_scale", "z_scale_init", "raw embedding spread (dashed: before training)",
                      out / f"scale_{slug}.png", log=True)
        curves_figure(plt, panels, "rank_z", None, "RankMe of the embeddings", out / f"rank_{slug}.png")
    if f"spectra_{slug}.png" in names:
        spectra_figure(plt, s, ref, out / f"spectra_{slug}.png")
