"""Which switch matters: the analysis of a full or partial factorial over the six switches of Table 4, or over
any 2^k sub-factorial of the eight switches (the six and negatives, xcorr) that the user names.

Every figure is computed from the rows of a report's ``runs.csv`` (the switch columns, ``status``,
``verdict``, ``linear_top1``, ``seed``) of one method's recipe, so a reader can recompute it:

    python -m ablate.report.factorial reports/factorial_simsiam/runs.csv --method simsiam
    python -m ablate.report.factorial runs.csv --method simsiam --switches predictor,negatives,var

The switches analysed are the ones ``outcomes`` keeps as columns (default: the six); the other functions read
them from there. A switch column missing from an older runs.csv reads as off.

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

from ..config import SWITCHES, TECHNIQUES
from ..errors import AblateError
from ..run.summary import FINISHED
from .stats import mean_ci
from .tables import md_table

SWITCH_VALUES = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def _bool(v) -> bool:
    return SWITCH_VALUES[str(v).strip().lower()]


def unknown_switch_values(df: pd.DataFrame) -> str | None:
    """The first switch column holding a value that is neither on nor off (``True``/``False``/``1``/``0``),
    as ``column=value``; None when every value is one of those (or empty)."""
    for t in (t for t in SWITCHES if t in df):
        bad = [v for v in df[t].dropna().unique() if str(v).strip().lower() not in SWITCH_VALUES]
        if bad:
            return f"{t}={bad[0]!r}"
    return None


def outcomes(runs: pd.DataFrame, switches=TECHNIQUES) -> pd.DataFrame:
    """The finished runs with a switch setting: a bool column per switch analysed (``switches``, in that
    order), ``collapsed`` and ``linear_top1``. A run is one of the method's cells when the six have values; a
    new switch (negatives, xcorr) with no value was off (a runs.csv written before it existed)."""
    unknown = [t for t in switches if t not in SWITCHES]
    if unknown:
        raise ValueError(f"unknown switch {', '.join(unknown)}; choose among {', '.join(SWITCHES)}")
    new = [t for t in SWITCHES if t not in TECHNIQUES]  # object dtype: an all-empty column reads as float
    runs = runs.assign(**{t: runs[t].astype(object).fillna(False) if t in runs else False for t in new})
    done = runs[runs["status"].isin(FINISHED) & runs[list(TECHNIQUES)].notna().all(axis=1)]
    out = pd.DataFrame({t: done[t].map(_bool) for t in switches})
    out["collapsed"] = (done["verdict"] == "collapse").to_numpy()
    out["linear_top1"] = pd.to_numeric(done.get("linear_top1"), errors="coerce").to_numpy()
    out["seed"] = done["seed"].to_numpy() if "seed" in done else None
    return out.reset_index(drop=True)


def names(runs: pd.DataFrame) -> tuple[str, ...]:
    """The switches an ``outcomes`` frame analyses, in its column order."""
    return tuple(c for c in runs.columns if c in SWITCHES)


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per switch combination run: its runs, collapsed runs, collapse rate and mean linear top-1."""
    sw = list(names(runs))
    g = runs.groupby(sw)
    out = pd.DataFrame({"runs": g.size(), "collapsed": g["collapsed"].sum(), "rate": g["collapsed"].mean(),
                        "linear": g["linear_top1"].mean()})
    if len(sw) == 1:  # keys as 1-tuples, as for several switches
        out.index = pd.MultiIndex.from_arrays([out.index], names=sw)
    return out


def _flip(combo: tuple, *switches: str, order=TECHNIQUES) -> tuple:
    return tuple(not v if t in switches else v for t, v in zip(order, combo))


def varied(c: pd.DataFrame) -> list[str]:
    """The switches run both on and off."""
    return [t for i, t in enumerate(c.index.names) if len({k[i] for k in c.index}) == 2]


def main_effects(runs: pd.DataFrame) -> pd.DataFrame:
    """Per switch with at least one matched pair of combinations (run both with it on and off): the runs,
    collapsed runs, collapse rate and mean linear top-1 with it on and off, pooled over those pairs; ``effect``,
    the mean over the pairs of (rate on - rate off), the factorial estimate that weighs each pair alike, and
    ``effect_ci``, the half-width of its 95% Student-t interval over the pairs (NaN for one pair)."""
    c, sw = cells(runs), names(runs)
    rows = {}
    combos = list(runs[list(sw)].itertuples(index=False, name=None))
    for t in varied(c):
        i = sw.index(t)
        on = [k for k in c.index if k[i] and _flip(k, t, order=sw) in c.index]
        if not on:
            continue
        sides = {}
        for side, keys in (("on", set(on)), ("off", {_flip(k, t, order=sw) for k in on})):
            sel = runs[[k in keys for k in combos]]
            sides |= {f"runs_{side}": len(sel), f"collapsed_{side}": int(sel["collapsed"].sum()),
                      f"rate_{side}": sel["collapsed"].mean(), f"linear_{side}": sel["linear_top1"].mean()}
        effect, half, _ = mean_ci([c.loc[k, "rate"] - c.loc[_flip(k, t, order=sw), "rate"] for k in on])
        rows[t] = {"pairs": len(on), **sides, "effect": effect, "effect_ci": math.nan if half is None else half}
    eff = pd.DataFrame.from_dict(rows, orient="index")
    ints = ["pairs", "runs_on", "collapsed_on", "runs_off", "collapsed_off"]
    return eff.astype({c: int for c in ints}) if len(eff) else eff


def interactions(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(k x k difference of differences in collapse rate, k x k count of 2x2 quadruples behind each, k the
    switches analysed); the diagonal holds the main effect and its number of pairs. NaN where no quadruple (or
    pair) was run."""
    c, sw = cells(runs), names(runs)
    rate = c["rate"].to_dict()
    flip = lambda k, *t: _flip(k, *t, order=sw)  # noqa: E731
    inter = pd.DataFrame(math.nan, index=list(sw), columns=list(sw))
    count = pd.DataFrame(0, index=list(sw), columns=list(sw))
    effects = main_effects(runs)
    for t in effects.index:
        inter.loc[t, t], count.loc[t, t] = effects.loc[t, "effect"], effects.loc[t, "pairs"]
    for (i, a), (j, b) in itertools.combinations(enumerate(sw), 2):
        dd = [(rate[k] - rate[flip(k, a)]) - (rate[flip(k, b)] - rate[flip(k, a, b)])
              for k in rate if k[i] and k[j] and all(x in rate for x in (flip(k, a), flip(k, b), flip(k, a, b)))]
        if dd:
            inter.loc[a, b] = inter.loc[b, a] = sum(dd) / len(dd)
            count.loc[a, b] = count.loc[b, a] = len(dd)
    return inter, count


def minimal_sets(runs: pd.DataFrame, on: bool) -> list[tuple[tuple[str, ...], int]]:
    """The smallest sets of switches that, all ``on`` (or all off when ``on`` is False), came with no
    complete collapse (``on``) or with complete collapse (off) in every run that had them, and the number of
    such runs; a set is listed only when no proper subset of it already qualifies."""
    want, sw = not on, names(runs)  # the collapse outcome every run must share
    found = []
    for k in range(len(sw) + 1):
        for s in itertools.combinations(sw, k):
            if any(set(f) <= set(s) for f, _ in found):
                continue
            sel = runs[(runs[list(s)] == on).all(axis=1)] if s else runs
            if len(sel) and (sel["collapsed"] == want).all():
                found.append((s, len(sel)))
    return found


def gaps(runs: pd.DataFrame) -> list[tuple]:
    """The switch combinations of the 2^k (64 for the six) with no finished run."""
    have = set(cells(runs).index)
    return [k for k in itertools.product((True, False), repeat=len(names(runs))) if k not in have]


def label(combo: tuple, order=TECHNIQUES) -> str:
    return "+".join(t for t, v in zip(order, combo) if v) or "none"


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
    text = [f"{len(runs)} finished runs cover {len(c)} of the {2 ** len(names(runs))} switch combinations "
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
    stacked = inter.where(~np.eye(len(inter), dtype=bool)).stack().dropna()
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


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _effect(e) -> str:
    return f"{e['effect']:+.2f}" + ("" if math.isnan(e["effect_ci"]) else f" ± {e['effect_ci']:.2f}")


def markdown(runs: pd.DataFrame, heatmap: str | None = None) -> str:
    """The analysis as report sections: main effects, interactions, minimal sets, gaps, paragraph."""
    eff = main_effects(runs)
    out = ["Main effects on complete collapse. Pairs: switch combinations run with the switch both on and off; "
           "the effect is the mean over the pairs of (collapse rate on - off) with its 95% Student-t interval "
           "over the pairs; the counts and accuracies beside it pool the runs of those pairs.", ""]
    rows = [[f"`{t}`", e["pairs"], f"{e['collapsed_on']} / {e['runs_on']}", f"{e['collapsed_off']} / {e['runs_off']}",
             _effect(e), _pct(e["linear_on"]), _pct(e["linear_off"])] for t, e in eff.astype(object).iterrows()]
    out += [md_table(["switch", "pairs", "collapsed with it on", "collapsed with it off",
                      "effect on collapse rate (± 95% t over pairs)", "linear % on", "linear % off"], rows), ""]
    sw = names(runs)
    fixed = [t for t in sw if t not in eff.index]
    if fixed:
        out += [f"Held fixed in every run (no effect measured): {', '.join(f'`{t}`' for t in fixed)}.", ""]
    inter, count = interactions(runs)
    out += ["Interactions: how much the row switch's effect on the collapse rate changes when the column switch is "
            "turned on (difference of differences over the 2x2 quadruples run; the number of quadruples in "
            "brackets; the diagonal repeats the main effect" + (f"; heatmap `{heatmap}`" if heatmap else "") + "):",
            ""]
    rows = [[f"`{a}`", *(f"{inter.loc[a, b]:+.2f} [{count.loc[a, b]}]" if not math.isnan(inter.loc[a, b]) else ""
                         for b in sw)] for a in sw]
    out += [md_table(["", *sw], rows), ""]
    prevent, cause = minimal_sets(runs, on=True), minimal_sets(runs, on=False)
    out += ["Minimal sets, read from the runs (a set is listed when every run that has it shares the outcome and "
            "no smaller set does; the number of runs behind it in brackets):", "",
            "- on, no run collapsed: " + ("; ".join(f"{_set(s, 'on')} [{n}]" for s, n in prevent) or "none"),
            "- off, every run collapsed: " + ("; ".join(f"{_set(s, 'off')} [{n}]" for s, n in cause) or "none"), ""]
    missing = gaps(runs)
    if missing:
        shown = ", ".join(f"`{label(k, sw)}`" for k in missing[:12]) + (", ..." if len(missing) > 12 else "")
        out += [f"Gaps: {len(missing)} of {2 ** len(sw)} combinations have no finished run ({shown}); the effects use "
                "only the pairs and quadruples run, and a minimal set may shrink or vanish once they are.", ""]
    out += ["In words: " + paragraph(runs), ""]
    return "\n".join(out)


def heatmap_figure(plt, runs: pd.DataFrame, title: str, path: Path) -> None:
    """k x k interaction heatmap (diagonal: main effects), annotated with values and quadruple counts."""
    inter, count = interactions(runs)
    sw = list(inter.index)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(inter.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(sw)), sw, rotation=30)
    ax.set_yticks(range(len(sw)), sw)
    for i, a in enumerate(sw):
        for j, b in enumerate(sw):
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
    for ``ablate.report`` and ``ablate.report.factorial``."""
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
    p = argparse.ArgumentParser(prog="python -m ablate.report.factorial",
                                description="The factorial analysis of a report's runs.csv, as markdown.")
    p.add_argument("runs_csv", type=Path, help="a report's runs.csv")
    p.add_argument("--method", help="the recipe to analyse (the method column); needed when there are several")
    p.add_argument("--switches", default=",".join(TECHNIQUES),
                   help=f"the switches of the 2^k (sub-)factorial, comma-separated, among {','.join(SWITCHES)} "
                        f"(default: the six of Table 4)")
    p.add_argument("--reg-geometry", help="where var/cov acted (the reg_geometry column); needed when there are "
                                          "several")
    args = p.parse_args(argv)
    chosen = tuple(t.strip() for t in args.switches.split(",") if t.strip())
    bad = [t for t in chosen if t not in SWITCHES] or (["(none)"] if not chosen else [])
    if bad or len(set(chosen)) != len(chosen):
        p.exit(2, f"ablate.report.factorial: error: --switches {args.switches}: name each switch once, among "
                  f"{','.join(SWITCHES)}\n")
    if not args.runs_csv.is_file():
        p.exit(2, f"ablate.report.factorial: error: {args.runs_csv} is not a file; give a report's runs.csv\n")
    try:
        df = read_runs_csv(args.runs_csv, (*TECHNIQUES, "status", "verdict", "method"))
    except AblateError as e:
        p.exit(2, f"ablate.report.factorial: error: {e}\n")
    bad = unknown_switch_values(df)
    if bad:
        p.exit(2, f"ablate.report.factorial: error: {args.runs_csv} has the switch value {bad}; a switch is True or False "
                  f"(1 or 0): fix that row\n")
    methods = sorted(df.loc[df[list(TECHNIQUES)].notna().all(axis=1), "method"].dropna().unique())
    if args.method is None and len(methods) > 1:
        p.exit(2, f"ablate.report.factorial: error: {args.runs_csv} holds the recipes {', '.join(methods)}; choose one "
                  f"with --method\n")
    method = args.method or (methods[0] if methods else None)
    df = df[df["method"] == method]
    geometries = sorted(df["reg_geometry"].dropna().unique()) if "reg_geometry" in df else []
    if args.reg_geometry is None and len(geometries) > 1:
        p.exit(2, f"ablate.report.factorial: error: the {method} runs in {args.runs_csv} put var/cov in several geometries "
                  f"({', '.join(geometries)}); choose one with --reg-geometry\n")
    if args.reg_geometry is not None:
        df = df[df["reg_geometry"].isna() | (df["reg_geometry"] == args.reg_geometry)]
    runs = outcomes(df, chosen)
    if not len(runs):
        p.exit(2, f"ablate.report.factorial: error: no finished run of method {method!r} in {args.runs_csv}; methods "
                  f"there: {', '.join(methods) or 'none'}\n")
    sys.stdout.write(markdown(runs))


if __name__ == "__main__":
    main()
