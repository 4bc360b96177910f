"""VICReg Table 4: the paper's reference, where a run sits in it, the paper's claims about it, its markdown.

A run is placed in a cell by its ``choices.row`` / ``choices.reg`` (the Table 4 sweep), else by its method and
switches. A setting gets a Table 4 only when its runs are Table 4 cells: some run came from the Table 4 sweep
(``experiment=vicreg_table4`` or a ``+row`` choice); other sweeps get a comparison report (``compare``).
"""

from importlib import resources

import pandas as pd

from ..config import SWITCHES, TECHNIQUES
from ..losses import reg_geometry
from ..run.summary import FINISHED
from .load import regularized, warn
from .tables import md_table

REGS = {"none": "No Reg", "var": "Var Reg", "var_cov": "Var/Cov Reg"}
REG_OF_SWITCHES = {(False, False): "none", (True, False): "var", (True, True): "var_cov"}
SHORT = {"ema": "ME", "stop_grad": "SG", "predictor": "PR", "batchnorm": "BN", "var": "Var", "cov": "Cov",
         "negatives": "Neg", "xcorr": "XC"}
GEOMETRIES = {"auto": "var/cov in the geometry the invariance compares (`reg_geometry=auto`, the default: sphere "
                      "for BYOL/SimSiam, raw for VICReg)",
              "raw": "var/cov on the raw projector outputs in every row (`reg_geometry=raw`)",
              "sphere": "var/cov on sqrt(d) z/|z| in every row (`reg_geometry=sphere`)"}


TABLES = {"vicreg_table4": "VICReg Table 4", "beyond_table4": "Beyond Table 4"}
TERMS = SWITCHES[len(TECHNIQUES):]  # negatives, xcorr: the rows beyond Table 4 have them, Table 4's none
ROW_SWITCHES = (*TECHNIQUES[:4], *TERMS)  # what tells a reference row from another (var/cov are its columns)


def reference(name: str = "vicreg_table4") -> pd.DataFrame:
    """A reference table shipped in the package (``TABLES``), indexed by the conf/row/ option name: the paper's
    Table 4, or the rows beyond it with their published numbers. ``ref.attrs["table"]`` names it."""
    with (resources.files("ablate") / "reference" / f"{name}.csv").open() as f:
        ref = pd.read_csv(f, comment="#", dtype=str, keep_default_na=False).set_index("row")
    for t in ROW_SWITCHES:
        ref[t] = ref[t] == "1" if t in ref else False
    ref.attrs["table"] = name
    return ref


def place(run: dict, ref: pd.DataFrame) -> tuple[str, str] | None:
    """The cell (row, reg) of a run in ``ref``, or None when its method and switches are not in the table."""
    tech, method = run["techniques"], run["method"]
    by_switches = None
    if tech and method:
        reg = REG_OF_SWITCHES.get((tech["var"], tech["cov"]))
        match = ref[(ref["method"] == method) & pd.concat([ref[t] == bool(tech.get(t)) for t in ROW_SWITCHES],
                                                           axis=1).all(axis=1)]
        if reg and len(match):
            by_switches = (match.index[0], reg)
    row, reg = run["choices"].get("row"), run["choices"].get("reg")
    if row in ref.index and reg in REGS:
        if by_switches is not None and by_switches != (row, reg):
            warn(f"{run['dir']}: row={row} reg={reg} but its switches are those of {by_switches}; "
                 f"placing it by its switches")
            return by_switches
        return row, reg
    return by_switches


def reference_for(runs: list[dict]) -> pd.DataFrame:
    """The reference a setting's runs fill: beyond Table 4 when some run came from that sweep or has one of its
    terms, else Table 4."""
    beyond = any(r["experiment"] == "beyond_table4" or any((r["techniques"] or {}).get(t) for t in TERMS)
                 for r in runs if not r["baseline"])
    return reference("beyond_table4" if beyond else "vicreg_table4")


def is_table4(runs: list[dict]) -> bool:
    """Whether these (non-baseline) runs are Table 4 cells: some came from the Table 4 sweep."""
    return any(r["experiment"] in TABLES or r["choices"].get("row") for r in runs)


def in_geometry(run: dict, mode: str) -> bool:
    """Whether a run belongs to the table of ``reg_geometry=mode``: runs without var/cov belong to every one."""
    return not regularized(run) or run["reg_geometry"] == reg_geometry(mode, run["invariance"])


def geometry_modes(runs: list[dict]) -> list[str]:
    """The reg_geometry tables worth showing: auto always, raw and sphere where some regularized run belongs
    to them and not to auto (so a table differs from the default in at least one cell)."""
    reg = [r for r in runs if regularized(r)]
    return ["auto"] + [m for m in ("raw", "sphere")
                       if any(in_geometry(r, m) and not in_geometry(r, "auto") for r in reg)]


def row_label(ref: pd.DataFrame, row: str) -> str:
    r = ref.loc[row]
    return f"{r['label']} " + (" ".join(SHORT[t] for t in ROW_SWITCHES if r[t]) or "-")


def cell_label(ref: pd.DataFrame, cell: tuple) -> str:
    row, reg = cell
    return f"{row_label(ref, row)} {REGS[reg].replace(' Reg', '') if reg != 'none' else REGS[reg]}"


def _columns(ref: pd.DataFrame) -> tuple:
    """The switches a table's rows differ in: Table 4's four, then the two terms where some row has one."""
    return (*TECHNIQUES[:4], *(t for t in TERMS if ref[t].any()))


def disagrees(cell: dict, paper: str) -> bool:
    """Our collapse verdict against the paper's cell (never where no paper reports the cell)."""
    return paper != "" and cell["collapse"] is not None and cell["collapse"] != (paper == "collapse")


def table_markdown(setting: dict, mode: str, ref: pd.DataFrame) -> tuple[str, list[str]]:
    """The table of one geometry (ours / paper in each cell, ⚠ where collapse disagrees) and the flag lines."""
    rows, flags = [], []
    for row, r in ref.iterrows():
        cells = []
        for reg in REGS:
            c, paper = setting["tables"][mode][(row, reg)], r[reg]
            dagger = "†" if r["original"] == reg else ""
            flag = ""
            if disagrees(c, paper):
                flag = " ⚠"
                reasons = sorted({x["verdict_reason"] for x in setting["runs"]
                                  if x["cell"] == (row, reg) and in_geometry(x, mode) and x["status"] in FINISHED
                                  and x["verdict_reason"]})
                flags.append(f"- {r['label']} ({row}), {REGS[reg]}: ours {c['text']}, paper {paper}. "
                             f"Our verdict: {'; '.join(reasons)}.")
            cells.append(f"{c['text']} / {paper or '—'}{dagger}{flag}")
        rows.append([r["label"], *("✓" if r[t] else "" for t in _columns(ref)), *cells])
    header = ["Method", *(SHORT[t] for t in _columns(ref)), *(f"{v} (ours / paper)" for v in REGS.values())]
    return md_table(header, rows), flags


def rescues_markdown(setting: dict, mode: str, ref: pd.DataFrame) -> list[str]:
    """One line per row that another row adds a single term to (``base``/``term`` in the reference): the row
    with No Reg, then each term that is added to it (the other rows, Var, Var/Cov) and what the cell became;
    none for a row whose cells are all unrun."""
    if "base" not in ref:
        return []
    t, out = setting["tables"][mode], []
    for base in dict.fromkeys(b for b in ref["base"] if b):
        added = [(f"+ {SHORT[ref.loc[row, 'term']]}", (row, "none")) for row in ref.index if ref.loc[row, "base"] == base]
        added += [(f"+ {REGS[reg].replace(' Reg', '')}", (base, reg)) for reg in ("var", "var_cov")
                  if ref.loc[base, "term"] == ""]  # a row of its own, not a term added to a Table 4 row
        if not any(t[cell]["done"] for cell in [(base, "none"), *(c for _, c in added)]):
            continue  # none of it run here (a sweep of other rows)
        out.append(f"- {row_label(ref, base)} ({base}), No Reg: {t[(base, 'none')]['text']}; "
                   + "; ".join(f"{name}: {t[cell]['text']}" for name, cell in added))
    return out


# The paper's statements about Table 4; each test reads one table of cells and returns True, False or None
# (not run yet), and names the cell it decides on.
def _no_collapse(cell):
    return cell, lambda t: None if t[cell]["collapse"] is None else t[cell]["collapse"] is False


def _collapse(cell):
    return cell, lambda t: None if t[cell]["collapse"] is None else t[cell]["collapse"] is True


def _better(cell, base):
    """``cell`` beats ``base``: a higher mean linear top-1, or no collapse where ``base`` collapsed."""
    def test(t):
        a, b = t[cell], t[base]
        if a["collapse"] is None or b["collapse"] is None:
            return None
        if a["collapse"] is True or b["collapse"] is True:
            return a["collapse"] is not True
        return None if a["acc"] is None or b["acc"] is None else a["acc"] > b["acc"]
    return cell, test


def _close(cell, base, points=2.0):
    def test(t):
        a, b = t[cell], t[base]
        if a["collapse"] is None or b["collapse"] is None:
            return None
        return a["acc"] is not None and b["acc"] is not None and abs(a["acc"] - b["acc"]) <= points
    return cell, test


WITH_BN = ("byol", "simsiam")
ROWS_3_8 = ("simsiam_no_bn", "simsiam_no_pred_no_bn", "vicreg_pred_no_bn", "vicreg_pred", "vicreg", "vicreg_no_bn")
TABLE4_CLAIMS = [
    ("BYOL and SimSiam with BN need no var/cov: no collapse with No Reg",
     [_no_collapse((row, "none")) for row in WITH_BN]),
    ("SimSiam without BN does not collapse with No Reg, but is below SimSiam with BN (35.1 vs 67.9)",
     [_no_collapse(("simsiam_no_bn", "none")), _better(("simsiam", "none"), ("simsiam_no_bn", "none"))]),
    ("Invariance alone collapses in rows 4-8 (SimSiam without predictor and BN, every VICReg row)",
     [_collapse((row, "none")) for row in ROWS_3_8[1:]]),
    ("The variance term alone prevents collapse in every row",
     [_no_collapse((row, "var")) for row in (*WITH_BN, *ROWS_3_8)]),
    ("Variance and covariance together prevent collapse in every row",
     [_no_collapse((row, "var_cov")) for row in (*WITH_BN, *ROWS_3_8)]),
    ("Covariance improves on variance alone in rows 3-8 (+9 to +12 points in the paper)",
     [_better((row, "var_cov"), (row, "var")) for row in ROWS_3_8]),
    ("Var or Var/Cov changes BYOL and SimSiam with BN little (paper: within 1 point; here: within 2)",
     [_close((row, reg), (row, "none")) for row in WITH_BN for reg in ("var", "var_cov")]),
]
BEYOND_CLAIMS = [
    ("SimCLR trains without a predictor, EMA or stop-gradient: no collapse with No Reg (its own setup, BN in the "
     "projector)", [_no_collapse(("simclr", "none"))]),
    ("Barlow Twins trains without a predictor, EMA or stop-gradient: no collapse with No Reg (its own setup, BN in "
     "the projector)", [_no_collapse(("barlowtwins", "none"))]),
    ("Barlow Twins needs its off-diagonal term: without it (the diagonal invariance alone) it collapses or falls "
     "below Barlow Twins", [_better(("barlowtwins", "none"), ("barlowtwins_no_xcorr", "none"))]),
]
CLAIMS = {"vicreg_table4": TABLE4_CLAIMS, "beyond_table4": BEYOND_CLAIMS}
VERDICT_WORDS = {(True,): "held", (False,): "not held", (False, True): "mixed"}


def _claim_outcome(tests, table: dict, ref: pd.DataFrame) -> str | None:
    """held / not held / mixed (naming the cells against it), with how many cells ran; None: none ran."""
    got = [test(table) for _, test in tests]
    known = sorted({g for g in got if g is not None})
    if not known:
        return None
    word = VERDICT_WORDS[tuple(known)]
    if word == "mixed":
        word += ": not in " + ", ".join(cell_label(ref, c) for (c, _), g in zip(tests, got) if g is False)
    if None in got:
        word += f" ({len(got) - got.count(None)} of {len(got)} cells run)"
    return word


def claims_markdown(setting: dict, ref: pd.DataFrame) -> str | None:
    """One row per claim decided in some geometry's table (its cells ran): held / not held / mixed in each,
    and the cells that decide it; None when no claim is decided yet."""
    modes = list(setting["tables"])
    rows = []
    for claim, tests in CLAIMS[ref.attrs["table"]]:
        outcomes = [_claim_outcome(tests, setting["tables"][mode], ref) for mode in modes]
        if any(outcomes):
            rows.append([claim, *(o or "not run" for o in outcomes),
                         ", ".join(cell_label(ref, c) for c, _ in tests)])
    if not rows:
        return None
    title = TABLES[ref.attrs["table"]]
    return md_table([f"Paper's claim ({title})", *(f"`reg_geometry={m}`" for m in modes), "cells"], rows)
