"""Beyond Table 4: NT-Xent's negatives and Barlow Twins' cross-correlation as switches. The formulas against
independent implementations written here (the official Barlow Twins main.py forward, NT-Xent as an explicit
-log softmax over the 2n - 1 others), each switch changing what it names, the presets, the verdict in each
method's geometry, and 1 process == 2 processes under torchrun."""

import itertools
import math
import shutil

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from test_dist import TOL

from ablate.config import TECHNIQUES, ConfigError, check_config, switches, techniques
from ablate.diagnostics import CollapseMonitor, default_thresholds, standardized_std, verdict
from ablate.losses import (
    INVARIANCE,
    STANDARDIZED,
    barlow_diagonal,
    ntxent_alignment,
    ntxent_uniformity,
    on_sphere,
    xcorr_offdiagonal,
)
from ablate.method import JointEmbedding
from ablate.report import factorial
from ablate.report.load import CSV_FIELDS


def official_barlow(z1, z2, lambd):
    """facebookresearch/barlowtwins main.py, BarlowTwins.forward after the projector, one GPU (the all_reduce is a
    sum over one term), rewritten literally."""
    def off_diagonal(x):
        n, m = x.shape
        assert n == m
        return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False)
    c = bn(z1).T @ bn(z2)
    c.div_(len(z1))
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    return on_diag + lambd * off_diag


def explicit_ntxent(z1, z2, tau):
    """SimCLR eq. 1 term by term: anchor i of the 2n, positive its other view, -log of the softmax over the
    2n - 1 others; averaged over the 2n anchors."""
    z = torch.cat([z1, z2]).double()
    n2, n = len(z), len(z1)
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        others = [k for k in range(n2) if k != i]
        logits = torch.stack([F.cosine_similarity(z[i], z[k], dim=0) / tau for k in others])
        total += -torch.log_softmax(logits, dim=0)[others.index(j)]
    return total / n2


def test_barlow_twins_worked_numbers():
    # each dimension standardizes to +-1 (times s = 1/sqrt(1 + eps)): C = s^2 [[1, -1], [1, -1]]
    z1, z2 = torch.tensor([[1.0, 3.0], [-1.0, 1.0]]), torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    s2 = 1 / (1 + 1e-5)
    assert barlow_diagonal(z1, z2).item() == pytest.approx((1 - s2) ** 2 + (1 + s2) ** 2, rel=1e-6)
    assert xcorr_offdiagonal(z1, z2).item() == pytest.approx(2 * s2 ** 2, rel=1e-6)
    expect = official_barlow(z1, z2, 0.0051)
    assert expect.item() == pytest.approx((1 - s2) ** 2 + (1 + s2) ** 2 + 0.0051 * 2 * s2 ** 2, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    for n, d in ((8, 4), (32, 16)):
        z1, z2 = torch.randn(n, d, generator=g) * 3 + 1, torch.randn(n, d, generator=g)
        ours = barlow_diagonal(z1, z2) + 0.0051 * xcorr_offdiagonal(z1, z2)
        torch.testing.assert_close(ours, official_barlow(z1, z2, 0.0051), rtol=1e-5, atol=1e-5)


def test_ntxent_worked_numbers():
    # d = 3: views (e1, e1) of image 0 and (e2, e3) of image 1. Image 0's anchors: -log(e^(1/t) / (e^(1/t) + 2));
    # image 1's: every cosine 0, -log(1/3)
    tau = 0.5
    z1, z2 = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    expect = (math.log(1 + 2 * math.exp(-1 / tau)) + math.log(3)) / 2
    ours = ntxent_alignment(z1, z2, tau) + ntxent_uniformity(z1, z2, tau)
    assert ours.item() == pytest.approx(expect, rel=1e-6)
    assert explicit_ntxent(z1, z2, tau).item() == pytest.approx(expect, rel=1e-12)
    g = torch.Generator().manual_seed(2)
    for n, d, tau in ((4, 3, 0.5), (16, 8, 0.2), (8, 32, 0.07)):
        z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        ours = ntxent_alignment(z1, z2, tau) + ntxent_uniformity(z1, z2, tau)
        torch.testing.assert_close(ours.double(), explicit_ntxent(z1, z2, tau), rtol=1e-5, atol=1e-5)


def _embeddings(n=16, d=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g)
    return z1, z1 + 0.3 * torch.randn(n, d, generator=g)


def test_presets_compose_the_published_losses(cfg_factory):
    """+method=simclr computes NT-Xent, +method=barlowtwins solo-learn's scale_loss x main.py's loss."""
    z1, z2 = _embeddings()
    simclr = JointEmbedding(cfg_factory("+method=simclr", *TINY))
    loss, terms = simclr.loss(z1, z2, z1, z2, z1, z2)
    torch.testing.assert_close(loss.double(), explicit_ntxent(z1, z2, 0.2), rtol=1e-5, atol=1e-5)
    barlow = JointEmbedding(cfg_factory("+method=barlowtwins", *TINY))
    loss, terms = barlow.loss(z1, z2, z1, z2, z1, z2)
    torch.testing.assert_close(loss, 0.1 * official_barlow(z1, z2, 0.0051), rtol=1e-5, atol=1e-5)
    assert barlow.terms[-1] == "loss_xcorr" and "loss_neg" not in barlow.terms
    assert simclr.terms[-1] == "loss_neg" and "loss_xcorr" not in simclr.terms


def test_presets_set_their_switches_and_recipes(cfg_factory):
    off6 = dict(ema=False, stop_grad=False, predictor=False, batchnorm=True, var=False, cov=False)
    for method, neg, xc, lr in (("simclr", True, False, 0.4), ("barlowtwins", False, True, 0.3)):
        cfg = cfg_factory(f"+method={method}")
        assert techniques(cfg) == off6
        assert switches(cfg) == off6 | {"negatives": neg, "xcorr": xc}
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("lars", lr, 1e-4)
    simclr, barlow = cfg_factory("+method=simclr"), cfg_factory("+method=barlowtwins")
    assert simclr.negatives.temperature == 0.2 and list(simclr.method.projector) == [2048, 256]
    assert list(simclr.aug.solarize_p) == [0.0, 0.0]  # symmetric views
    assert barlow.xcorr.lambd == 0.0051 and list(barlow.method.projector) == [2048, 2048, 2048]
    assert list(barlow.aug.solarize_p) == [0.0, 0.2]  # asymmetric views
    head = JointEmbedding(cfg_factory("+method=simclr", "model.head_width_mult=0.5", *TINY[:1]))
    assert head.dim == 128  # widths scale with model.head_width_mult like every preset
    for method in ("byol", "simsiam", "vicreg"):  # every Table 4 preset keeps both new switches off
        on = switches(cfg_factory(f"+method={method}"))
        assert not on["negatives"] and not on["xcorr"]


def _loss_without_and_with(cfg_factory, base, switch, z1, z2):
    out = []
    for extra in ([], [switch]):
        torch.manual_seed(0)
        m = JointEmbedding(cfg_factory(*base, *extra, *TINY))
        out.append((m, *m.loss(z1, z2, z1, z2, z1, z2)))
    return out


@pytest.mark.parametrize("method", ["simsiam", "vicreg"])
def test_negatives_switch_adds_the_uniformity_term(cfg_factory, method):
    z1, z2 = _embeddings()
    (_, off, t_off), (m, on, t_on) = _loss_without_and_with(cfg_factory, [f"+method={method}"], "negatives=ntxent",
                                                            z1, z2)
    assert len(t_off) == len(t_on) == 6 and t_off[4] == 0 and "loss_neg" not in _model(cfg_factory, method).terms
    expect = ntxent_uniformity(z1, z2, 0.2)  # the default temperature, weight 1
    torch.testing.assert_close(t_on[4], expect)
    torch.testing.assert_close(on - off, expect, rtol=1e-5, atol=1e-5)
    # the term pushes the images of a batch apart: its gradient moves z1 away from z2's other rows
    z = z1.clone().requires_grad_()
    ntxent_uniformity(z, z2, 0.2).backward()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("method,geometry", [("simsiam", "sphere"), ("vicreg", "raw")])
def test_xcorr_switch_adds_the_off_diagonal_term_in_the_regularizer_geometry(cfg_factory, method, geometry):
    z1, z2 = _embeddings()
    (_, off, t_off), (m, on, t_on) = _loss_without_and_with(cfg_factory, [f"+method={method}"], "xcorr=offdiag",
                                                            z1, z2)
    assert m.geometry == geometry and t_off[5] == 0
    g = on_sphere if geometry == "sphere" else (lambda z: z)
    expect = 0.0051 * xcorr_offdiagonal(g(z1), g(z2))
    torch.testing.assert_close(t_on[5], expect)
    torch.testing.assert_close(on - off, expect, rtol=1e-5, atol=1e-5)
    other = JointEmbedding(cfg_factory(f"+method={method}", "xcorr=offdiag",
                                       f"reg_geometry={'raw' if geometry == 'sphere' else 'sphere'}", *TINY))
    assert other.loss(z1, z2, z1, z2, z1, z2)[1][5] != t_on[5]  # the geometry changes what it measures


def _model(cfg_factory, method):
    return JointEmbedding(cfg_factory(f"+method={method}", *TINY))


def test_new_invariances_are_options_a_preset_or_user_chooses(cfg_factory):
    z1, z2 = _embeddings()
    for name, fn in (("ntxent_align", lambda a, b: ntxent_alignment(a, b, 0.2)), ("barlow_diag", barlow_diagonal)):
        assert name in INVARIANCE
        m = JointEmbedding(cfg_factory("+method=vicreg", f"method.invariance={name}", "+method.temperature=0.2",
                                       "var=none", "cov=none", *TINY))
        torch.testing.assert_close(m.loss(z1, z2, z1, z2, z1, z2)[1][1], fn(z1, z2))
    with pytest.raises(ConfigError, match="needs method.temperature"):
        check_config(cfg_factory("+method=vicreg", "method.invariance=ntxent_align"))
    for bad in ("negatives.temperature=0", "negatives.weight=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            check_config(cfg_factory("+method=simclr", bad))
    with pytest.raises(ConfigError, match="xcorr.lambd"):
        check_config(cfg_factory("+method=barlowtwins", "xcorr.lambd=nan"))
    with pytest.raises(ConfigError, match="takes no switch; drop negatives"):
        check_config(cfg_factory("+method=random", "negatives=ntxent"))


@pytest.mark.parametrize("method", ["simclr", "barlowtwins"])
def test_the_new_presets_train_a_step_with_predictor_and_without_bn(cfg_factory, method):
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    for extra in ([], ["predictor=mlp"], ["batchnorm=none"], ["predictor=mlp", "batchnorm=none", "var=hinge"]):
        m = JointEmbedding(cfg_factory(f"+method={method}", *extra, *TINY))
        loss, terms = m(x1, x2)
        assert torch.isfinite(loss) and (m.predictor is not None) is ("predictor=mlp" in extra)
        loss.backward()
        assert all(p.grad is not None for p in m.online.projector.parameters())


# the verdict in each method's geometry, on constructed embeddings
def _healthy(n=512, d=32, offset=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=g) + offset


def _metrics(z, z_scale_init=1.0):
    m = CollapseMonitor(z_scale_init=z_scale_init, standardized=True)
    m.update(z)
    return m.report()


def test_simclr_is_read_scale_free_like_byol_and_simsiam(cfg_factory):
    from ablate.losses import SCALE_FREE

    assert cfg_factory("+method=simclr").method.invariance in SCALE_FREE
    th = default_thresholds()
    for z, expect in ((_healthy(scale=1e-3), "ok"),  # small but spread on the sphere: NT-Xent sees directions
                      (_healthy(offset=0.0) * 0 + torch.randn(32) + 1e-4 * _healthy(), "collapse")):
        mon = CollapseMonitor(scale_free=True, thresholds=th)
        mon.update(z)
        assert mon.report()["verdict"] == expect


def test_barlow_twins_is_read_on_its_standardized_embeddings():
    assert "barlow_diag" in STANDARDIZED
    th = default_thresholds()
    # healthy but far from the origin (Barlow is blind to the mean): the normalized std calls it collapse
    far = _healthy(offset=50.0)
    assert verdict(_metrics(far), 32, 512, th, scale_free=True)[0] == "collapse"
    assert _metrics(far)["verdict"] == "ok"
    # healthy but shrunk (weight decay on a scale-blind loss): the raw spread calls it collapse
    small = _healthy(scale=0.05)
    assert verdict(_metrics(small), 32, 512, th, scale_free=False)[0] == "collapse"
    assert _metrics(small)["verdict"] == "ok" and standardized_std(small) > 0.99
    # complete collapse: one vector, spread far below BN's eps, which the standardization zeroes
    one = torch.randn(32) + 1e-5 * _healthy()
    assert standardized_std(one) < 0.01
    assert _metrics(one)["verdict"] == "collapse"
    # dimensional collapse: every dimension one feature (what the diagonal alone allows), large offsets aside
    d = 256  # the verdict's line: RankMe below 1% of min(d, n)
    line = _healthy(d=1) * torch.linspace(0.5, 2, d) + torch.linspace(-10, 10, d) + 1e-6 * _healthy(d=d)
    got = _metrics(line)
    assert got["verdict"] == "dimensional_collapse" and got["rank_z_bn"] < 1.5


@pytest.mark.xdist_group("gloo")  # with test_dist's check: one set of processes trains both
def test_two_gloo_processes_match_one_process_for_simclr_and_barlow(gloo_runs):
    """Negatives gathered with gradients and the cross-correlation over the global batch: 2 processes at batch
    B/2 train what 1 process trains at batch B (the worker and the runs of test_dist)."""
    one, r0, r1 = gloo_runs
    for method in ("simclr", "barlowtwins"):
        a, b, c = one[method], r0[method], r1[method]
        torch.testing.assert_close(b["losses"], a["losses"], **TOL)
        assert a["losses"][0, 0] != a["losses"][-1, 0]  # it trained
        term = 4 if method == "simclr" else 5
        assert (a["losses"][:, term] != 0).all()  # the new term was on
        for key, value in a["state"].items():
            if value.is_floating_point():
                torch.testing.assert_close(b["state"][key], value, **TOL, msg=lambda m, k=key, w=method: f"{w}: {k}: {m}")
            torch.testing.assert_close(c["state"][key], b["state"][key], rtol=0, atol=0)


def _beyond_csv(seeds=(0, 1)) -> pd.DataFrame:
    """runs.csv rows of a 2^3 sub-factorial on SimSiam SG only (no predictor, no BN) over predictor, negatives
    and var: collapse iff all three are off; a collapsed run probes at 10%, a healthy one at 50% (+10 with
    negatives)."""
    rows = []
    for pred, neg, var in itertools.product((True, False), repeat=3):
        for seed in seeds:
            collapsed = not (pred or neg or var)
            rows.append({"dir": f"d/{pred},{neg},{var},seed={seed}", "method": "simsiam", "ema": False,
                         "stop_grad": True, "predictor": pred, "batchnorm": False, "var": var, "cov": False,
                         "negatives": neg, "xcorr": False, "seed": seed, "status": "complete",
                         "verdict": "collapse" if collapsed else "ok",
                         "linear_top1": 10.0 if collapsed else 50.0 + 10 * neg})
    return pd.DataFrame(rows)


def test_a_sub_factorial_over_new_and_old_switches():
    runs = factorial.outcomes(_beyond_csv(), ("predictor", "negatives", "var"))
    assert list(runs.columns[:3]) == ["predictor", "negatives", "var"] and len(runs) == 16
    eff = factorial.main_effects(runs)
    assert list(eff.index) == ["predictor", "negatives", "var"] and list(eff["pairs"]) == [4] * 3
    # negatives off: 1 of the 4 combinations (all off) collapses, in both seeds
    assert (eff.loc["negatives", "collapsed_on"], eff.loc["negatives", "collapsed_off"]) == (0, 2)
    assert eff.loc["negatives", "effect"] == pytest.approx(-0.25)
    assert eff.loc["negatives", "linear_on"] == pytest.approx(60.0)
    assert factorial.minimal_sets(runs, on=True) == [(("predictor",), 8), (("negatives",), 8), (("var",), 8)]
    assert factorial.minimal_sets(runs, on=False) == [(("predictor", "negatives", "var"), 2)]
    inter, count = factorial.interactions(runs)
    assert inter.shape == (3, 3) and count.loc["negatives", "var"] == 2
    md = factorial.markdown(runs)
    assert "16 finished runs cover 8 of the 8 switch combinations" in md
    assert "Every run collapsed when `predictor` and `negatives` and `var` were all off (2 runs)" in md
    # without --switches: the six of Table 4
    six = factorial.outcomes(_beyond_csv())
    assert list(six.columns[:6]) == list(TECHNIQUES)


def test_a_runs_csv_from_before_the_new_switches_reads_them_as_off(tmp_path, capsys):
    from test_factorial import fixture_csv

    old = fixture_csv()
    assert "negatives" not in old
    runs = factorial.outcomes(old, ("predictor", "negatives", "var"))
    assert not runs["negatives"].any()
    assert "Held fixed in every run (no effect measured): `negatives`" in factorial.markdown(runs)
    path = tmp_path / "runs.csv"
    _beyond_csv().to_csv(path, index=False)
    factorial.main([str(path), "--switches", "predictor,negatives,var"])
    assert "| `negatives` | 4 | 0 / 8 | 2 / 8 | -0.25 ± 0.80 | 60.0 |" in capsys.readouterr().out
    for bad in ("predictor,negatives,nope", "var,var", ""):
        with pytest.raises(SystemExit):
            factorial.main([str(path), "--switches", bad])
        assert "name each switch once" in capsys.readouterr().err
    assert {"negatives", "xcorr"} <= set(CSV_FIELDS)  # the report writes the columns the factorial reads


def test_the_beyond_table4_sweep_is_its_45_cells_per_seed_and_its_reference_rows():
    from test_config import compose_all, expand

    from ablate.report.table4 import REG_OF_SWITCHES, place, reference

    jobs = expand("beyond_table4")
    assert len(jobs) == 15 * 3 * 3
    cfgs = compose_all("beyond_table4", [j for j in jobs if "seed=0" in j])
    got = {(c.method.name, *(int(v) for v in switches(c).values())) for c in cfgs}
    assert len(cfgs) == len(got) == 45  # every cell a different computation
    ref, cells = reference("beyond_table4"), set()
    for c in cfgs:
        check_config(c)
        assert (c.train.epochs, c.data.name, c.backbone.widths[0]) == (15, "shapes", 8)  # factorial_cpu
        # the reference row named by +row has the switches the config composes: the report places it there
        on = switches(c)
        cell = place({"method": c.method.name, "techniques": on, "choices": {}, "dir": "x"}, ref)
        assert cell is not None and cell[1] == REG_OF_SWITCHES[(on["var"], on["cov"])]
        cells.add(cell)
    assert len(cells) == 45
    methods = {c.method.name for c in cfgs}
    assert methods == {"simclr", "barlowtwins", "simsiam", "vicreg"}
    # the new terms are given only to Table 4's rows that collapse without a regularizer
    for c in cfgs:
        on = switches(c)
        if c.method.name in ("simsiam", "vicreg") and (on["negatives"] or on["xcorr"]):
            assert not on["predictor"] and not on["batchnorm"]


def test_the_beyond_report_places_its_rows_checks_the_papers_claims_and_lists_the_rescues(tmp_path):
    """A constructed beyond_table4 sweep (2 seeds): the collapsing rows of Table 4 and Barlow Twins without its
    off-diagonal term collapse with No Reg, every other cell trains."""
    from test_report import fake_run

    from ablate.report import write_report
    from ablate.report.table4 import REG_OF_SWITCHES, reference

    ref = reference("beyond_table4")
    sweep = tmp_path / "sweep"
    collapsing = {"simsiam_no_pred_no_bn", "vicreg_no_bn"}
    for (row, r), (bits, reg), seed in itertools.product(ref.iterrows(), REG_OF_SWITCHES.items(), (0, 1)):
        tech = {t: bool(r[t]) for t in (*TECHNIQUES[:4], "negatives", "xcorr")} | dict(zip(("var", "cov"), bits))
        dead = reg == "none" and row in collapsing
        dim = reg == "none" and row == "barlowtwins_no_xcorr"
        fake_run(sweep, f"{row},{reg},{seed}", r["method"], tech, row=row, reg=reg, seed=seed,
                 experiment="beyond_table4", verdict="collapse" if dead else "dimensional_collapse" if dim else "ok",
                 linear=10.0 if dead else 30.0 if dim else 50.0 + seed)
    md = write_report([sweep], tmp_path / "out", figures=False).read_text()
    assert md.startswith("# Anti-collapse ablations: Beyond Table 4")
    assert "### Beyond Table 4" in md and "| Method | ME | SG | PR | BN | Neg | XC |" in md
    claims = md[md.index("Paper's claim (Beyond Table 4)"):].split("\n\n")[0]
    assert claims.count("| held |") == 3, claims
    assert "| SimCLR |  |  |  | ✓ | ✓ |  | 50.5 ± 6.4 / 90.7† |" in md
    assert "| SimSiam |  | ✓ |  |  |  |  | collapse 2/2" in md  # Table 4's own cell, its paper value beside it
    rescues = md[md.index("What each added term does"):].split("\n\n")[1].splitlines()
    assert rescues[0].startswith("- Barlow Twins BN (barlowtwins_no_xcorr), No Reg: 30.0 ± 0.0 (dim. collapse in 2/2)")
    assert rescues[1] == ("- SimSiam SG (simsiam_no_pred_no_bn), No Reg: collapse 2/2; + Neg: 50.5 ± 6.4; + XC: 50.5 ± "
                          "6.4; + Var: 50.5 ± 6.4; + Var/Cov: 50.5 ± 6.4")
    assert "All 8 finished cells that a paper reports (8 of 45) agree with it" in md  # SimCLR, Barlow, 2 x 3 of Table 4
    part = tmp_path / "part"  # a sweep of SimSiam's rows alone: the other rows' lines are left out, not pending
    for d in sweep.glob("simsiam_no_pred_no_bn*"):
        shutil.copytree(d, part / d.name)
    md = write_report([part], tmp_path / "out2", figures=False).read_text()
    assert md[md.index("What each added term does"):].split("\n\n")[1].splitlines() == [rescues[1]]
