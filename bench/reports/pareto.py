"""The figure a user decides from: accuracy against what it costs to train, every mechanism.

Accuracy is each mechanism's mean test NDCG@10 over its seeds with a 95 % interval that resamples seeds and users
(reports/seeds.py); cost is one training epoch's time and peak memory, every mechanism on its default (best) CPU
path, measured side by side on one machine (scripts/training_throughput.py). The two come from different rows:
accuracy from the training runs (whatever machine trained them: accuracy does not depend on it), cost from the
one-machine measurement (epoch times of runs trained on different machines and loads do not compare).

    pareto_cost_<setting>.png / .md / .csv   the points, their intervals and the Pareto fronts
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import style
from .paired import read_ranks
from .readme import ACCURACY_SETTING, ACCURACY_SHAPE, PROTOCOL, accuracy_readings
from .seeds import hierarchical_interval, seed_matrix
from .style import pipe_table

THROUGHPUT = "training-throughput/ml-1m-mechanisms.json"  # the cost side, for ACCURACY_SETTING


def _accuracy(root: Path) -> dict[str, tuple[int, float, float, float]]:
    """mechanism -> (seeds, mean NDCG@10, interval low, high) on the setting's shape."""
    reading = next((r for r in accuracy_readings(root) if r.setting == ACCURACY_SETTING), None)
    if reading is None:
        return {}
    result = {}
    for mechanism, own in reading.runs.groupby("mechanism"):
        payloads = [read_ranks(p) for p in own["ranks_path"].dropna() if Path(p).exists()]
        if not payloads:
            continue
        users = sorted(set.intersection(*(set(p["users"]) for p in payloads)))
        gains = seed_matrix(payloads, users, PROTOCOL)
        low, high = hierarchical_interval(np.zeros((1, len(users))), gains)  # the interval of the mean itself
        result[mechanism] = (len(payloads), float(gains.mean()), low, high)
    return result


def _cost(path: Path) -> tuple[dict[str, tuple[float, float, str]], dict]:
    """mechanism label -> (median epoch seconds, median peak MiB, backend); and the measurement's meta."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    by_mechanism: dict[str, list[dict]] = {}
    for row in payload["rows"]:
        by_mechanism.setdefault(_label(row["attention"]), []).append(row)
    cost = {
        name: (
            statistics.median(r["train_s"] for r in runs),
            statistics.median(r["peak_mem_bytes"] for r in runs) / 2**20,
            str(runs[0].get("backend") or ""),
        )
        for name, runs in by_mechanism.items()
        if all(r.get("peak_mem_bytes") is not None for r in runs)
    }
    return cost, payload.get("meta", {})


def _label(spec: str) -> str:
    """'linrec:variant=official' -> 'linrec[variant=official]', as training rows label mechanisms."""
    name, *pairs = spec.split(":")
    return f"{name}[{','.join(pairs)}]" if pairs else name


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front, best = [], -np.inf
    for cost, accuracy in sorted(points):
        if accuracy > best:
            front.append((cost, accuracy))
            best = accuracy
    return front


def pareto_report(root: Path, out: Path) -> list[Path]:
    """The accuracy-against-cost figure and table for ACCURACY_SETTING, where both sides have rows."""
    throughput = root / THROUGHPUT
    if not throughput.exists():
        return []
    accuracy = _accuracy(root)
    cost, meta = _cost(throughput)
    names = [n for n in sorted(accuracy, key=lambda n: -accuracy[n][1]) if n in cost]
    if not names:
        return []
    out.mkdir(parents=True, exist_ok=True)
    colors = style.colors(names)
    machine = f"{meta.get('device', '?')} ({meta.get('cpu_capability', '?')}), {meta.get('threads', '?')} thread(s)"
    load = meta.get("load_avg_1m")
    loaded = (
        f" The epochs ran one after another, one thread each, while other processes loaded the machine (1-minute "
        f"load {load:.1f} at the end): times compare with each other, not with a quiet machine's."
        if load and load > 1.5
        else ""
    )
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    fronts = {}
    for ax, index, label in ((panels[0], 0, "one training epoch (s)"), (panels[1], 1, "peak memory of an epoch (MiB)")):
        for name in names:
            seeds, mean, low, high = accuracy[name]
            ax.errorbar(
                cost[name][index], mean, yerr=[[mean - low], [high - mean]], fmt="o", color=colors[name],
                capsize=3, label=f"{name} ({seeds} seed{'s' if seeds > 1 else ''})",
            )  # fmt: skip
        fronts[index] = _front([(cost[n][index], accuracy[n][1]) for n in names])
        ax.plot(*zip(*fronts[index], strict=True), linestyle="--", color="grey", linewidth=1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("test NDCG@10 (seen excl.), mean, 95 % CI")
    panels[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(
        f"Accuracy against training cost — ML-1M, SASRec, N = {ACCURACY_SHAPE['seq_len']}; cost measured on {machine}",
        fontsize=10,
    )
    fig.tight_layout()
    stem = out / f"pareto_cost_{ACCURACY_SETTING}"
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)
    on_front = [{point for point in fronts[i]} for i in (0, 1)]
    table = [
        {
            "mechanism": name,
            "seeds": accuracy[name][0],
            "NDCG@10": f"{accuracy[name][1]:.4f}",
            "95 % CI": f"[{accuracy[name][2]:.4f}, {accuracy[name][3]:.4f}]",
            "epoch (s)": f"{cost[name][0]:.1f}",
            "peak MiB": f"{cost[name][1]:.0f}",
            "CPU path": cost[name][2] or "PyTorch",  # no backend recorded: the mechanism had one path then
            "front (time)": "yes" if (cost[name][0], accuracy[name][1]) in on_front[0] else "",
            "front (memory)": "yes" if (cost[name][1], accuracy[name][1]) in on_front[1] else "",
        }
        for name in names
    ]
    frame = pd.DataFrame(table)
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(
        "\n".join(
            [
                f"# Accuracy against training cost — {ACCURACY_SETTING}",
                "",
                f"Accuracy: test NDCG@10 (seen items excluded), mean over each mechanism's seeds, 95 % interval over "
                f"seeds and users (the committed training rows). Cost: one training epoch at N = "
                f"{ACCURACY_SHAPE['seq_len']}, batch {ACCURACY_SHAPE['batch_size']}, each mechanism on its default CPU "
                f"path, side by side on {machine} ([rows](../../{THROUGHPUT})); CPU path: the kernel it ran when the "
                f"epochs were timed (PyTorch: its only path then). Front: no other mechanism is both cheaper and "
                f"more accurate.{loaded}",
                "",
                pipe_table(frame),
                "",
            ]
        ),
        encoding="utf-8",
    )
    return [stem.with_suffix(suffix) for suffix in (".png", ".md", ".csv")]
