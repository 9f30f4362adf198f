"""The peers command's table: our implementations against the reference packages', cell by cell."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .style import pipe_table


def peers_table(rows: list[dict]) -> str:
    def cell(row: dict) -> str:
        text = f"{row['time_ms']:.1f} ms"
        if row.get("ours_over_peer") is not None:
            text += f" (ours/peer {row['ours_over_peer']:.2f})"
        if row.get("ratio_vs_sdpa") is not None:
            text += f" [/sdpa {row['ratio_vs_sdpa']:.2f}]"
        return text

    measured = [r for r in rows if "time_ms" in r]
    frame = pd.DataFrame(measured)
    frame["cell"] = [cell(r) for r in measured]
    frame["what"] = (
        frame["level"] + " " + frame["implementation"] + " " + frame["causal"].map({True: "causal", False: "bidir"})
    )
    table = frame.pivot_table(index=["mode", "what"], columns="seq_len", values="cell", aggfunc="first")
    table.columns = [f"N={c}" for c in table.columns]
    return pipe_table(table.fillna("—"))


def write_peers_table(rows: list[dict], path: Path) -> str:
    """The table, with a caption naming the machine, into `path`; returns the table."""
    table = peers_table(rows)
    path.write_text(
        f"Peers, {rows[0]['device']}, torch {rows[0]['torch']}, {rows[0]['threads']} threads; "
        "cells: median time (ours / peer) [/sdpa]\n\n" + table + "\n",
        encoding="utf-8",
    )
    return table
