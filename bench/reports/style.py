"""One look for every figure and table: a mechanism keeps one colour and one marker in every plot of every report
(speed curves, accuracy, long-range heatmaps, the site), and every table is written by one writer (Markdown, CSV,
LaTeX)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

BASELINE = "sdpa"  # torch's fused softmax attention: every speed-up and accuracy gap is against it

# the registered mechanisms: fixed, so a figure's colours never shift when one of them is absent
_FIXED = {
    "sdpa": ("#000000", "o"),
    "softmax": ("#7f7f7f", "o"),
    "linrec": ("#d62728", "s"),
    "linear": ("#1f77b4", "^"),
    "efficient": ("#2ca02c", "D"),
    "performer": ("#9467bd", "v"),
    "linformer": ("#8c564b", "P"),
    "mamba": ("#e377c2", "X"),
    "retention": ("#17becf", "*"),
    "lru": ("#bcbd22", "h"),
}
# anything else (a variant, a plugin's mechanism): a colour and marker picked by a hash of its label, so it too
# looks the same in every figure
_SPARE_COLORS = ("#ff7f0e", "#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
_SPARE_MARKERS = ("p", "<", ">", "d", "H", "8")


def _look(mechanism: str) -> tuple[str, str]:
    if mechanism in _FIXED:
        return _FIXED[mechanism]
    number = int(hashlib.sha256(mechanism.encode()).hexdigest(), 16)
    return _SPARE_COLORS[number % len(_SPARE_COLORS)], _SPARE_MARKERS[number % len(_SPARE_MARKERS)]


def colors(mechanisms) -> dict[str, str]:
    """{mechanism label: colour}, the same in every figure."""
    return {m: _look(m)[0] for m in set(mechanisms)}


def markers(mechanisms) -> dict[str, str]:
    """{mechanism label: matplotlib marker}, the same in every figure."""
    return {m: _look(m)[1] for m in set(mechanisms)}


def pipe_table(table: pd.DataFrame) -> str:
    """A Markdown pipe table; a named index becomes its first columns (pandas' to_markdown would pull in tabulate)."""
    if any(name is not None for name in table.index.names):
        table = table.reset_index()
    header = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))


def write_table(stem: Path, table: pd.DataFrame, caption: str, page: list[str] | None = None) -> list[Path]:
    """The table as STEM.csv, STEM.tex and STEM.md; the Markdown is `page` (its lines) where a report writes more
    than the table, else the caption over the table."""
    flat = table.reset_index() if any(name is not None for name in table.index.names) else table
    flat.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".tex").write_text(flat.to_latex(index=False, escape=True, caption=caption), encoding="utf-8")
    text = "\n".join(page) if page is not None else f"{caption}\n\n{pipe_table(table)}"
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    return [stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".tex")]
