"""Markdown rendering of result tables (comparison, backtest metrics) without `tabulate`."""

from __future__ import annotations

import numpy as np
import pandas as pd


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A Markdown table without the optional `tabulate` dependency."""
    def fmt(v) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    head = "| " + " | ".join(map(str, table.columns)) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, sep, *rows]) + "\n"
