"""Means over seeds with a 95% confidence interval from Student's t distribution.

A cell of n seeds is reported as ``mean ± h`` with h = t_{0.975, n-1} * s / sqrt(n), s the sample standard
deviation (n - 1 in the denominator): the half-width of the two-sided 95% interval for the mean, assuming the
seeds' results are normally distributed. With 2 or 3 seeds the interval is wide (t = 12.7 and 4.3): that is
what 2 or 3 seeds can say.
"""

import math

# t_{0.975, df} for df = 1..30 (any statistics table, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z975 = 1.959964  # the normal quantile, the limit as df grows
CI_NOTE = "mean ± half-width of the 95% Student-t interval over seeds (t with n-1 degrees of freedom)"


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom: the table up to 30, beyond it the
    Cornish-Fisher expansion around the normal quantile (Abramowitz & Stegun 26.7.5; error < 1e-4 there)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def finite(values) -> list[float]:
    """The values that are numbers (None, NaN and text left out)."""
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isnan(x):
            out.append(x)
    return out


def mean_ci(values) -> tuple[float | None, float | None, int]:
    """(mean, half-width of its 95% t interval, n) of the finite values; the half-width is None for one value
    and the mean is None for none."""
    xs = finite(values)
    n = len(xs)
    if not n:
        return None, None, 0
    mean = sum(xs) / n
    if n == 1:
        return mean, None, 1
    s = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t975(n - 1) * s / math.sqrt(n), n


def fmt_ci(values, digits: int = 1) -> str:
    """``mean ± h`` of the values (``mean`` alone for one value, ``n/a`` for none)."""
    mean, half, n = mean_ci(values)
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")
