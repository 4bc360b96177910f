"""The embedding-geometry read-out: its measures on worked numbers, and the CLI on a trained run."""

import math

import pytest
import torch

from ablate.diagnostics import class_share, cone, view_agreement
from ablate.tools.geometry import main, run_geometry


def test_view_agreement_on_worked_numbers():
    z = torch.tensor([[0.0], [2.0]])
    assert view_agreement(z, z).item() == pytest.approx(1.0)
    assert view_agreement(z, z.flip(0)).item() == pytest.approx(-1.0)  # the views swap images
    # centred: a = [[-1, 0], [1, 0]], b = [[-1, 1], [1, -1]]; 2 * sum(a*b) / (sum a^2 + sum b^2) = 2*2 / (2+4)
    z1, z2 = torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[1.0, 1.0], [3.0, -1.0]])
    assert view_agreement(z1, z2).item() == pytest.approx(2 / 3)
    # independent views: the spread is all noise
    assert abs(view_agreement(torch.randn(20000, 8), torch.randn(20000, 8)).item()) < 0.03
    # a common offset changes nothing: concordance without the location term
    assert view_agreement(z1 + 5, z2 - 7).item() == pytest.approx(2 / 3)


def test_class_share_on_worked_numbers():
    # class means 1 and 11, centre 6: between 4 * 25 = 100, total 36 + 16 + 16 + 36 = 104
    z, y = torch.tensor([[0.0], [2.0], [10.0], [12.0]]), torch.tensor([0, 0, 1, 1])
    assert class_share(z, y).item() == pytest.approx(100 / 104)
    assert class_share(torch.tensor([[1.0], [3.0], [1.0], [3.0]]), y).item() == pytest.approx(0.0)


def test_cone_ray_and_line_across_the_origin():
    ray = cone(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))  # centre (2, 0), deviations (+-1, 0)
    assert ray["mean_to_spread"] == pytest.approx(2.0)
    assert ray["min_cos_to_mean"] == pytest.approx(1.0)
    assert ray["top_share"] == pytest.approx(1.0) and ray["top_cos_to_mean"] == pytest.approx(1.0)
    fan = cone(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))  # centre (1, 0), deviations (0, +-1)
    assert fan["mean_to_spread"] == pytest.approx(1.0)
    assert fan["min_cos_to_mean"] == pytest.approx(1 / math.sqrt(2))
    assert fan["top_share"] == pytest.approx(1.0) and fan["top_cos_to_mean"] == pytest.approx(0.0, abs=1e-12)


def test_cli_reads_a_trained_run(tiny_run, tmp_path, capsys):
    tiny_run("vicreg")
    g = run_geometry(tmp_path / "run")
    assert g["epoch"] == 1 and -1 <= g["view_agreement"] <= 1 and 0 <= g["class_share"] <= 1
    assert g == run_geometry(tmp_path / "run")  # the views are drawn from --seed
    assert main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith(f"| {tmp_path / 'run'} | 1 | ")


def test_cli_refuses_a_directory_without_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds no checkpoint.pt" in err
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_run_without_spread_is_named_not_divided_by_zero(tiny_run, tmp_path, monkeypatch):
    tiny_run("vicreg")
    monkeypatch.setattr("ablate.tools.geometry.embed", lambda model, x, norm, bs: (None, torch.ones(len(x), 4)))
    assert run_geometry(tmp_path / "run") == {"epoch": 1,
                                              "degenerate": "every embedding the same vector (no spread)"}


def test_cli_refuses_a_baseline_run_in_one_line(tiny_run, tmp_path, capsys):
    tiny_run("supervised")
    assert main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a baseline run (supervised)" in err
