"""Tables in docs/ that come from committed rows: `report --committed` rewrites each one between its markers, and a
test fails when a committed page differs from what its rows give (so a figure in the docs cannot drift from them).

A block in a page reads

    <!-- generated:walks (python -m bench report --committed; do not edit) -->
    | mechanism | ... |
    <!-- /generated:walks -->

and DOC_TABLES names the function that writes it from the results folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .rows import load_frame
from .style import pipe_table

WALKS = "sweeps/walks-cpu-amd-epyc-avx2.jsonl"
WALK_NAMES = {"linear": "linear", "efficient": "Efficient", "performer": "Performer", "retention": "retention"}
WALK_LENGTHS = (50, 200, 1024)
MEMORY_AT = 200
MIB = 2**20


def _walks(root: Path) -> str:
    """Each causal walk against its chunked PyTorch path (ms, chunked -> walk), its speed over sdpa, and peak memory
    at N = 200, beside sdpa and LinRec: one run (results/sweeps/walks-*.jsonl)."""
    frame = load_frame([root / WALKS])
    frame = frame[(frame["mode"] == "fwd_bwd") & frame["causal"] & (frame["status"] == "ok")]
    chunked = frame["options"].map(lambda options: (options or {}).get("backend") == "torch")

    def cell(attention: str, torch_path: bool) -> dict[int, dict]:
        rows = frame[(frame["attention"] == attention) & (chunked == torch_path)]
        return {int(r["seq_len"]): r for r in rows.to_dict("records")}

    def ms(value: float, n: int) -> str:  # whole milliseconds at the longest N, where they run to thousands
        return f"{value:,.0f}" if n == max(WALK_LENGTHS) else f"{value:.1f}"

    sdpa = cell("sdpa", False)

    def over_sdpa(own: dict[int, dict]) -> str:  # sdpa's time over this path's, at each length
        return ", ".join(f"{sdpa[n]['time_ms'] / own[n]['time_ms']:.2f}×" for n in WALK_LENGTHS)

    records = []
    for attention, name in WALK_NAMES.items():
        before, after = cell(attention, True), cell(attention, False)
        records.append(
            {
                "mechanism": name,
                **{f"N = {n:,}": f"{ms(before[n]['time_ms'], n)} → {ms(after[n]['time_ms'], n)}" for n in WALK_LENGTHS},
                "over `sdpa` (walk)": over_sdpa(after),
                f"peak MiB at {MEMORY_AT}": f"{before[MEMORY_AT]['peak_mem_bytes'] / MIB:.0f} → "
                f"{after[MEMORY_AT]['peak_mem_bytes'] / MIB:.0f}",
            }
        )
    for attention, name in (("sdpa", "`sdpa`"), ("linrec", "LinRec")):
        own = cell(attention, False)
        records.append(
            {
                "mechanism": name,
                **{f"N = {n:,}": ms(own[n]["time_ms"], n) for n in WALK_LENGTHS},
                "over `sdpa` (walk)": "" if attention == "sdpa" else over_sdpa(own),
                f"peak MiB at {MEMORY_AT}": f"{own[MEMORY_AT]['peak_mem_bytes'] / MIB:.0f}",
            }
        )
    return pipe_table(pd.DataFrame(records))


# (page under docs/, block name) -> its writer
DOC_TABLES: dict[tuple[str, str], Callable[[Path], str]] = {("results-cpu.md", "walks"): _walks}


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name} [^\n]*-->\n)(.*?)(<!-- /generated:{name} -->)", re.DOTALL)


def generated_block(page: str, name: str) -> str | None:
    """The text between a page's markers for `name` (None when the page has no such block)."""
    match = _block(name).search(page)
    return match.group(2) if match else None


def write_doc_tables(docs: Path, root: Path) -> list[Path]:
    """Rewrite every generated block of the pages under `docs` from the rows under `root`; the pages changed."""
    changed = []
    for (page_name, name), writer in DOC_TABLES.items():
        page = docs / page_name
        text = page.read_text(encoding="utf-8")
        match = _block(name).search(text)
        if match is None:
            raise ValueError(f"{page}: no '<!-- generated:{name} ... -->' block to write the {name} table into")
        updated = text[: match.start(2)] + writer(root) + "\n" + text[match.end(2) :]
        if updated != text:
            page.write_text(updated, encoding="utf-8")
            changed.append(page)
    return changed
