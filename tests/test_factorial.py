"""The factorial analysis on fixture runs whose rule is known: collapse exactly when neither predictor nor var
is on."""
import itertools

import pandas as pd
import pytest

from ablate.config import TECHNIQUES
from ablate.report import factorial


def fixture_csv(drop=(), seeds=(0, 1)) -> pd.DataFrame:
    """runs.csv rows of a SimSiam-recipe factorial: collapse iff predictor and var are both off; a collapsed run
    probes at 10%, a healthy one at 50% (+5 with cov)."""
    rows = []
    for combo in itertools.product((True, False), repeat=6):
        sw = dict(zip(TECHNIQUES, combo))
        if factorial.label(combo) in drop:
            continue
        for seed in seeds:
            collapsed = not sw["predictor"] and not sw["var"]
            rows.append({"dir": f"d/{factorial.label(combo)},seed={seed}", "method": "simsiam", **sw, "seed": seed,
                         "status": "complete", "verdict": "collapse" if collapsed else "ok",
                         "reg_geometry": "sphere" if sw["var"] or sw["cov"] else None,
                         "linear_top1": 10.0 if collapsed else 50.0 + 5 * sw["cov"]})
    rows.append({"dir": "d/baseline=random,seed=0", "method": "random", "seed": 0, "status": "complete",
                 "verdict": None, "linear_top1": 30.0, **{t: None for t in TECHNIQUES}})
    return pd.DataFrame(rows)


def test_the_rule_its_main_effects_and_minimal_sets_are_recovered():
    runs = factorial.outcomes(fixture_csv())
    assert len(runs) == 128 and runs["collapsed"].sum() == 32
    eff = factorial.main_effects(runs)
    assert list(eff["pairs"]) == [32] * 6
    for t in ("predictor", "var"):
        assert (eff.loc[t, "collapsed_on"], eff.loc[t, "runs_on"]) == (0, 64)
        assert (eff.loc[t, "collapsed_off"], eff.loc[t, "runs_off"]) == (32, 64)
        assert eff.loc[t, "effect"] == pytest.approx(-0.5)
        # on: all healthy, 50 or 55 evenly -> 52.5; off: half collapsed (10) -> (10 + 52.5) / 2
        assert eff.loc[t, "linear_on"] == pytest.approx(52.5)
        assert eff.loc[t, "linear_off"] == pytest.approx(31.25)
    for t in ("ema", "stop_grad", "batchnorm", "cov"):
        assert eff.loc[t, "effect"] == 0 and eff.loc[t, "collapsed_on"] == eff.loc[t, "collapsed_off"] == 16
    assert eff.loc["cov", "linear_on"] - eff.loc["cov", "linear_off"] == pytest.approx(5 * 0.75)
    inter, count = factorial.interactions(runs)
    # predictor's effect on the rate: -1 with var off, 0 with var on -> +1
    assert inter.loc["predictor", "var"] == inter.loc["var", "predictor"] == pytest.approx(1.0)
    assert count.loc["predictor", "var"] == 16
    others = inter.drop(index=["predictor", "var"], columns=["predictor", "var"])
    assert (others.to_numpy() == 0).all()
    assert inter.loc["ema", "var"] == 0 and inter.loc["var", "var"] == pytest.approx(-0.5)
    assert factorial.minimal_sets(runs, on=True) == [(("predictor",), 64), (("var",), 64)]
    assert factorial.minimal_sets(runs, on=False) == [(("predictor", "var"), 32)]
    text = factorial.paragraph(runs)
    assert "128 finished runs cover 64 of the 64 switch combinations (seeds 0, 1); 32 collapsed" in text
    assert "No run collapsed when `predictor` was on (64 runs); or when `var` was on (64 runs)" in text
    assert "Every run collapsed when `predictor` and `var` were both off (32 runs)" in text
    assert "from 32 of 64 runs to 0 of 64" in text
    assert "The largest interaction is `predictor` x `var` (+1.00" in text
    assert "with both off 32 of 32" in text
    assert "no finished run" not in text


def test_a_partial_factorial_is_analysed_from_the_cells_run_and_its_gaps_stated():
    drop = {"ema+stop_grad+batchnorm", "predictor+var", "none"}
    runs = factorial.outcomes(fixture_csv(drop=drop, seeds=(0,)))
    assert len(runs) == 61
    eff = factorial.main_effects(runs)
    # predictor: 32 pairs minus the two whose either side is missing (predictor+var / var; none / predictor)
    # and ema+stop_grad+batchnorm / +predictor
    assert eff.loc["predictor", "pairs"] == 29
    assert eff.loc["predictor", "collapsed_on"] == 0
    assert eff.loc["predictor", "collapsed_off"] == sum(1 for k in itertools.product((True, False), repeat=6)
                                                          if k[2] and factorial.label(k) not in drop
                                                          and factorial.label(factorial._flip(k, "predictor"))
                                                          not in drop and not k[4])
    assert factorial.minimal_sets(runs, on=False) == [(("predictor", "var"), 14)]
    md = factorial.markdown(runs, heatmap="interactions.png")
    assert "Gaps: 3 of 64 combinations have no finished run" in md
    assert "`none`" in md and "`predictor+var`" in md and "`ema+stop_grad+batchnorm`" in md
    assert "3 combinations have no finished run, so every statement above is read from the 61 that do" in md


def test_a_switch_held_fixed_gets_no_effect():
    df = fixture_csv()
    runs = factorial.outcomes(df[df["ema"] != True])  # noqa: E712 (pandas mask)
    eff = factorial.main_effects(runs)
    assert "ema" not in eff.index
    assert "Held fixed in every run (no effect measured): `ema`" in factorial.markdown(runs)
    assert factorial.interactions(runs)[0].loc["ema"].isna().all()


def test_cli_reads_a_runs_csv(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    fixture_csv().to_csv(path, index=False)
    factorial.main([str(path)])
    out = capsys.readouterr().out
    assert "| `predictor` | 32 | 0 / 64 | 32 / 64 | -0.50 ± 0.18 | 52.5 | 31.2 |" in out
    with pytest.raises(SystemExit):
        factorial.main([str(tmp_path / "nope.csv")])
    assert "is not a file" in capsys.readouterr().err
    df = fixture_csv()
    df.loc[df["reg_geometry"].notna() & (df["seed"] == 1), "reg_geometry"] = "raw"
    df.to_csv(path, index=False)
    with pytest.raises(SystemExit):
        factorial.main([str(path)])
    assert "choose one with --reg-geometry" in capsys.readouterr().err
    factorial.main([str(path), "--reg-geometry", "raw"])
    # the 16 combinations without var/cov in both seeds, the 48 with them in seed 1 only
    assert "80 finished runs cover 64" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["maybe", "2", "on"])
def test_cli_refuses_a_switch_value_that_is_neither_on_nor_off(tmp_path, capsys, bad):
    df = fixture_csv().astype({"var": object})
    df.loc[3, "var"] = bad
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SystemExit) as e:
        factorial.main([str(path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and f"var='{bad}'" in err


def test_main_effects_carry_a_t_interval_over_the_pairs():
    import math

    eff = factorial.main_effects(factorial.outcomes(fixture_csv()))
    # predictor: 16 pairs differ by -1 (var off), 16 by 0 (var on): mean -0.5, s = sqrt(32 * 0.25 / 31)
    s = math.sqrt(32 * 0.25 / 31)
    assert eff.loc["predictor", "effect_ci"] == pytest.approx(2.0395 * s / math.sqrt(32), abs=1e-4)
    assert eff.loc["ema", "effect"] == 0 and eff.loc["ema", "effect_ci"] == 0
