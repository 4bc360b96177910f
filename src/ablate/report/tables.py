"""Markdown and number formatting shared by every report section (Table 4, comparison, factorial)."""

import math


def md_table(header: list, rows: list[list]) -> str:
    """A GitHub markdown table; a ``|`` inside a cell is escaped."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(esc, row)) + " |" for row in rows])


def fmt(x, digits: int = 1) -> str:
    """A number with ``digits`` decimals (two significant digits when smaller), blank for a missing one."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else (f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2g}")


def short(error, limit: int = 70) -> str:
    """An error message on one line, cut to ``limit`` characters."""
    error = " ".join(str(error or "unknown error").split())
    return error if len(error) <= limit else error[:limit - 3] + "..."


def words(text: str) -> int:
    return len(text.split())
