"""The command line before Hydra sees it (ablate.run.hydra_args): flag values are not overrides, and +reg is
applied after +row in any order."""

from ablate.run.hydra_args import order_groups, override_args, sweep_args


def test_flag_values_are_not_overrides():
    args = ["-cn", "config", "-cp", "conf", "-m", "+method=byol", "--cfg=job", "-p", "method", "~ema", "x=1"]
    assert override_args(args) == ["+method=byol", "~ema", "x=1"]


def test_reg_is_applied_after_the_row_in_any_order():
    assert order_groups(["-m", "+reg=none", "+row=byol", "seed=0"]) == ["-m", "+row=byol", "+reg=none", "seed=0"]
    assert order_groups(["+row=byol", "+reg=none"]) == ["+row=byol", "+reg=none"]
    assert sweep_args(["-m", "+experiment=vicreg_table4", "+reg=none"])[-1] == "+reg=choice(none)"
    assert sweep_args(["-m", "+reg=none,var"])[-1] == "+reg=none,var"
