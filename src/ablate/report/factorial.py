"""Which switch matters: the analysis of a full or partial factorial over the six switches.

Every figure is computed from the rows of a report's ``runs.csv`` (the six switch columns, ``status``,
``verdict``, ``linear_top1``, ``seed``) of one method's recipe, so a reader can recompute it:

    python -m ablate.factorial reports/factorial_simsiam/runs.csv --method simsiam

- main effects: each switch on vs off, over the pairs of switch combinations that differ in that switch alone and
  were both run (all 32 pairs in a full factorial), so a missing cell never tilts the comparison;
- interactions: for each two switches a, b, (effect of a with b on) - (effect of a with b off) on the collapse
  rate, over the quadruples of combinations that differ in a and b alone (a 2x2 difference of differences);
- minimal sets: the smallest sets of switches whose being on prevented complete collapse in every run that had
  them, and whose being off led to it in every run, read from the runs present.
Complete collapse is the run's verdict ``collapse``; a diverged run counts as not collapsed and has no accuracy.
"""

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import TECHNIQUES
from ..errors import AblateError
from ..run.summary import FINISHED

ALL = tuple(itertools.product((True, False), repeat=len(TECHNIQUES)))


def _bool(v) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0")


def outcomes(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs with a switch setting: six bool columns, ``collapsed`` and ``linear_top1``."""
    done = runs[runs["status"].isin(FINISHED) & runs[list(TECHNIQUES)].notna().all(axis=1)]
    out = pd.DataFrame({t: done[t].map(_bool) for t in TECHNIQUES})
    out["collapsed"] = (done["verdict"] == "collapse").to_numpy()
    out["linear_top1"] = pd.to_numeric(done.get("linear_top1"), errors="coerce").to_numpy()
    out["seed"] = done["seed"].to_numpy() if "seed" in done else None
    return out.reset_index(drop=True)


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per switch combination run: its runs, collapsed runs, collapse rate and mean linear top-1."""
    g = runs.groupby(list(TECHNIQUES))
    return pd.DataFrame({"runs": g.size(), "collapsed": g["collapsed"].sum(), "rate": g["collapsed"].mean(),
                         "linear": g["linear_top1"].mean()})


def _flip(combo: tuple, *switches: str) -> tuple:
    return tuple(not v if t in switches else v for t, v in zip(TECHNIQUES, combo))


def varied(c: pd.DataFrame) -> list[str]:
    """The switches run both on and off."""
    return [t for i, t in enumerate(TECHNIQUES) if len({k[i] for k in c.index}) == 2]


def main_effects(runs: pd.DataFrame) -> pd.DataFrame:
    """Per switch: runs, collapsed runs, collapse rate and mean linear top-1 with it on and off, over the
    matched pairs of combinations (both run); ``effect`` = rate on - rate off."""
    c = cells(runs)
    rows = {}
    for t in varied(c):
        i = TECHNIQUES.index(t)
        on = [k for k in c.index if k[i] and _flip(k, t) in c.index]
        sides, combos = {}, list(runs[list(TECHNIQUES)].itertuples(index=False, name=None))
        for side, keys in (("on", set(on)), ("off", {_flip(k, t) for k in on})):
            sel = runs[[k in keys for k in combos]]
            sides |= {f"runs_{side}": len(sel), f"collapsed_{side}": int(sel["collapsed"].sum()),
                      f"rate_{side}": sel["collapsed"].mean() if len(sel) else math.nan,
                      f"linear_{side}": sel["linear_top1"].mean()}
        rows[t] = {"pairs": len(on), **sides, "effect": sides["rate_on"] - sides["rate_off"]}
    eff = pd.DataFrame.from_dict(rows, orient="index")
    ints = ["pairs", "runs_on", "collapsed_on", "runs_off", "collapsed_off"]
    return eff.astype({c: int for c in ints}) if len(eff) else eff


def interactions(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(6 x 6 difference of differences in collapse rate, 6 x 6 count of 2x2 quadruples behind each); the
    diagonal holds the main effect and its number of pairs. NaN where no quadruple (or pair) was run."""
    c = cells(runs)
    rate = c["rate"].to_dict()
    inter = pd.DataFrame(math.nan, index=list(TECHNIQUES), columns=list(TECHNIQUES))
    count = pd.DataFrame(0, index=list(TECHNIQUES), columns=list(TECHNIQUES))
    effects = main_effects(runs)
    for t in effects.index:
        inter.loc[t, t], count.loc[t, t] = effects.loc[t, "effect"], effects.loc[t, "pairs"]
    for (i, a), (j, b) in itertools.combinations(enumerate(TECHNIQUES), 2):
        dd = [(rate[k] - rate[_flip(k, a)]) - (rate[_flip(k, b)] - rate[_flip(k, a, b)])
              for k in rate if k[i] and k[j] and all(x in rate for x in (_flip(k, a), _flip(k, b), _flip(k, a, b)))]
        if dd:
            inter.loc[a, b] = inter.loc[b, a] = sum(dd) / len(dd)
            count.loc[a, b] = count.loc[b, a] = len(dd)
    return inter, count


def minimal_sets(runs: pd.DataFrame, on: bool) -> list[tuple[tuple[str, ...], int]]:
    """The smallest sets of switches that, all ``on`` (or all off when ``on`` is False), came with no
    complete collapse (``on``) or with complete collapse (off) in every run that had them, and the number of
    such runs; a set is listed only when no proper subset of it already qualifies."""
    want = not on  # the collapse outcome every run must share
    found = []
    for k in range(len(TECHNIQUES) + 1):
        for s in itertools.combinations(TECHNIQUES, k):
            if any(set(f) <= set(s) for f, _ in found):
                continue
            sel = runs[(runs[list(s)] == on).all(axis=1)] if s else runs
            if len(sel) and (sel["collapsed"] == want).all():
                found.append((s, len(sel)))
    return found


def gaps(runs: pd.DataFrame) -> list[tuple]:
    """The switch combinations of the 64 with no finished run."""
    have = set(cells(runs).index)
    return [k for k in ALL if k not in have]


def label(combo: tuple) -> str:
    return "+".join(t for t, v in zip(TECHNIQUES, combo) if v) or "none"


def _set(s: tuple[str, ...], word: str) -> str:
    return " and ".join(f"`{t}`" for t in s) + f" {word}" if s else "(no switch)"


def _were(s: tuple[str, ...], state: str) -> str:
    return {1: f"was {state}", 2: f"were both {state}"}.get(len(s), f"were all {state}")


def _count(sel: pd.DataFrame) -> str:
    return f"{int(sel['collapsed'].sum())} of {len(sel)}"


def paragraph(runs: pd.DataFrame) -> str:
    """Plain-language summary; every number is a count or mean over the rows of runs.csv it names."""
    c, eff = cells(runs), main_effects(runs)
    seeds = sorted({str(s) for s in runs["seed"].dropna()}) if "seed" in runs else []
    text = [f"{len(runs)} finished runs cover {len(c)} of the 64 switch combinations "
            f"(seeds {', '.join(seeds) or '?'}); {int(runs['collapsed'].sum())} collapsed completely."]
    prevent, cause = minimal_sets(runs, on=True), minimal_sets(runs, on=False)
    if prevent:
        text.append("No run collapsed when " + "; or when ".join(
            f"{_set(s, _were(s, 'on'))} ({n} runs)" for s, n in prevent) + ".")
    if cause:
        text.append("Every run collapsed when " + "; or when ".join(
            f"{_set(s, _were(s, 'off'))} ({n} runs)" for s, n in cause) + ".")
    if len(eff):
        top = eff.reindex(eff["effect"].abs().sort_values(ascending=False, kind="stable").index)
        for t, e in top.head(2).astype(object).iterrows():
            if e["effect"] == 0:
                break
            text.append(f"Turning `{t}` on {'lowers' if e['effect'] < 0 else 'raises'} the collapse rate from "
                        f"{e['collapsed_off']} of {e['runs_off']} runs to {e['collapsed_on']} of {e['runs_on']} "
                        f"(mean linear top-1 {e['linear_off']:.1f}% off, {e['linear_on']:.1f}% on; "
                        f"{e['pairs']} matched pairs of combinations).")
    inter, count = interactions(runs)
    stacked = inter.where(~np.eye(len(TECHNIQUES), dtype=bool)).stack().dropna()
    if len(stacked) and stacked.abs().max() > 0:
        a, b = stacked.abs().idxmax()
        quad = {(x, y): runs[(runs[a] == x) & (runs[b] == y)] for x in (True, False) for y in (True, False)}
        text.append(f"The largest interaction is `{a}` x `{b}` ({stacked[(a, b)]:+.2f} in collapse rate over "
                    f"{count.loc[a, b]} quadruples): with `{a}` on and `{b}` off {_count(quad[True, False])} runs "
                    f"collapsed, with both on {_count(quad[True, True])}, with `{a}` off and `{b}` on "
                    f"{_count(quad[False, True])}, with both off {_count(quad[False, False])}.")
    missing = gaps(runs)
    if missing:
        text.append(f"{len(missing)} combinations have no finished run, so every statement above is read from "
                    f"the {len(c)} that do.")
    return " ".join(text)


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def markdown(runs: pd.DataFrame, heatmap: str | None = None) -> str:
    """The analysis as report sections: main effects, interactions, minimal sets, gaps, paragraph."""
    eff = main_effects(runs)
    out = ["Main effects (complete collapse; pairs: combinations run with the switch both on and off, the "
           "figures beside them pool the runs of those pairs):", ""]
    rows = [[f"`{t}`", e["pairs"], f"{e['collapsed_on']} / {e['runs_on']}", f"{e['collapsed_off']} / {e['runs_off']}",
             f"{e['effect']:+.2f}", _pct(e["linear_on"]), _pct(e["linear_off"])] for t, e in eff.astype(object).iterrows()]
    out += [_md_table(["switch", "pairs", "collapsed with it on", "collapsed with it off", "effect on collapse rate",
                       "linear % on", "linear % off"], rows), ""]
    fixed = [t for t in TECHNIQUES if t not in eff.index]
    if fixed:
        out += [f"Held fixed in every run (no effect measured): {', '.join(f'`{t}`' for t in fixed)}.", ""]
    inter, count = interactions(runs)
    out += ["Interactions: how much the row switch's effect on the collapse rate changes when the column switch is "
            "turned on (difference of differences over the 2x2 quadruples run; the number of quadruples in "
            "brackets; the diagonal repeats the main effect" + (f"; heatmap `{heatmap}`" if heatmap else "") + "):",
            ""]
    rows = [[f"`{a}`", *(f"{inter.loc[a, b]:+.2f} [{count.loc[a, b]}]" if not math.isnan(inter.loc[a, b]) else ""
                         for b in TECHNIQUES)] for a in TECHNIQUES]
    out += [_md_table(["", *TECHNIQUES], rows), ""]
    prevent, cause = minimal_sets(runs, on=True), minimal_sets(runs, on=False)
    out += ["Minimal sets, read from the runs (a set is listed when every run that has it shares the outcome and "
            "no smaller set does; the number of runs behind it in brackets):", "",
            "- on, no run collapsed: " + ("; ".join(f"{_set(s, 'on')} [{n}]" for s, n in prevent) or "none"),
            "- off, every run collapsed: " + ("; ".join(f"{_set(s, 'off')} [{n}]" for s, n in cause) or "none"), ""]
    missing = gaps(runs)
    if missing:
        shown = ", ".join(f"`{label(k)}`" for k in missing[:12]) + (", ..." if len(missing) > 12 else "")
        out += [f"Gaps: {len(missing)} of 64 combinations have no finished run ({shown}); the effects use only the "
                "pairs and quadruples run, and a minimal set may shrink or vanish once they are.", ""]
    out += ["In words: " + paragraph(runs), ""]
    return "\n".join(out)


def heatmap_figure(plt, runs: pd.DataFrame, title: str, path: Path) -> None:
    """6 x 6 interaction heatmap (diagonal: main effects), annotated with values and quadruple counts."""
    inter, count = interactions(runs)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(inter.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(TECHNIQUES)), TECHNIQUES, rotation=30)
    ax.set_yticks(range(len(TECHNIQUES)), TECHNIQUES)
    for i, a in enumerate(TECHNIQUES):
        for j, b in enumerate(TECHNIQUES):
            v = inter.loc[a, b]
            ax.text(j, i, "" if math.isnan(v) else f"{v:+.2f}\n[{count.loc[a, b]}]", ha="center", va="center",
                    fontsize=8)
    fig.colorbar(im, ax=ax, label="change in collapse rate (diagonal: main effect)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def read_runs_csv(path: Path, columns, **read_kw) -> pd.DataFrame:
    """A report's runs.csv as a DataFrame (``read_kw`` go to ``pd.read_csv``); AblateError in one line for a file
    that is not one: unreadable, empty, binary, not CSV, or lacking one of ``columns``. The one reader of runs.csv
    for ``ablate.report`` and ``ablate.factorial``."""
    hint = "give the runs.csv python -m ablate.report writes"
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise AblateError(f"{path} cannot be read ({e.strerror or e}); {hint}") from None
    if not head.strip():
        raise AblateError(f"{path} is empty; {hint}")
    if b"\0" in head:
        raise AblateError(f"{path} is a binary file, not a CSV; {hint}")
    try:
        df = pd.read_csv(path, **read_kw)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise AblateError(f"{path} is not a readable CSV ({' '.join(str(e).split())[:120]}); {hint}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AblateError(f"{path} lacks the runs.csv columns {', '.join(sorted(missing))}; {hint}")
    return df


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ablate.factorial",
                                description="The factorial analysis of a report's runs.csv, as markdown.")
    p.add_argument("runs_csv", type=Path, help="a report's runs.csv")
    p.add_argument("--method", help="the recipe to analyse (the method column); needed when there are several")
    p.add_argument("--reg-geometry", help="where var/cov acted (the reg_geometry column); needed when there are "
                                          "several")
    args = p.parse_args(argv)
    if not args.runs_csv.is_file():
        p.exit(2, f"ablate.factorial: error: {args.runs_csv} is not a file; give a report's runs.csv\n")
    try:
        df = read_runs_csv(args.runs_csv, (*TECHNIQUES, "status", "verdict", "method"))
    except AblateError as e:
        p.exit(2, f"ablate.factorial: error: {e}\n")
    methods = sorted(df.loc[df[list(TECHNIQUES)].notna().all(axis=1), "method"].dropna().unique())
    if args.method is None and len(methods) > 1:
        p.exit(2, f"ablate.factorial: error: {args.runs_csv} holds the recipes {', '.join(methods)}; choose one "
                  f"with --method\n")
    method = args.method or (methods[0] if methods else None)
    df = df[df["method"] == method]
    geometries = sorted(df["reg_geometry"].dropna().unique()) if "reg_geometry" in df else []
    if args.reg_geometry is None and len(geometries) > 1:
        p.exit(2, f"ablate.factorial: error: the {method} runs in {args.runs_csv} put var/cov in several geometries "
                  f"({', '.join(geometries)}); choose one with --reg-geometry\n")
    if args.reg_geometry is not None:
        df = df[df["reg_geometry"].isna() | (df["reg_geometry"] == args.reg_geometry)]
    runs = outcomes(df)
    if not len(runs):
        p.exit(2, f"ablate.factorial: error: no finished run of method {method!r} in {args.runs_csv}; methods "
                  f"there: {', '.join(methods) or 'none'}\n")
    sys.stdout.write(markdown(runs))


if __name__ == "__main__":
    main()
