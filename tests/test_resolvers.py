"""The resolvers Hydra's config tree uses (ablate.resolvers): long sweep cell names are shortened."""

from ablate.resolvers import short_dirname


def test_long_sweep_cell_names_are_shortened_and_short_ones_kept():
    assert short_dirname("+reg=var,+row=byol,seed=0") == "+reg=var,+row=byol,seed=0"
    assert short_dirname("x" * 255) == "x" * 255  # every name that worked before is kept
    long = ",".join(f"aug.key{i}=0.{i}" for i in range(40))
    short = short_dirname(long)
    assert short == short_dirname(long) and len(short.encode()) <= 200 and short.startswith("aug.key0=0.0,")
    assert short_dirname(long + "1") != short
