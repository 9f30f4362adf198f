"""The accuracy reports' plots: accuracy (and seconds per epoch) against N or batch size, accuracy against N within
each history-length range, accuracy against training time with its Pareto front, learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from .training_rows import PROTOCOL_NAMES


def timed_alike(line: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """A mechanism's summary rows in groups timed alike (same device, batches whole or split): seconds per epoch
    are joined by a line only within one."""
    alike = [c for c in ("device", "batches") if c in line]
    if not alike:
        return [({}, line)]
    return [(dict(zip(alike, key, strict=True)), rows) for key, rows in line.groupby(alike)]


def vs_axis(table: pd.DataFrame, axis: str, protocols: list[str], title: str, path: Path, colors: dict) -> None:
    panels = [(f"ndcg@10:{p}", f"test NDCG@10 ({PROTOCOL_NAMES.get(p, p)})") for p in protocols] + [
        ("s_per_epoch", "seconds per epoch")
    ]
    # seconds per epoch join only points timed alike: one marker per device, dashed where batches were split
    markers = dict(zip(sorted(table["device"].unique()) if "device" in table else [], "osD^v", strict=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for ax, (column, ylabel) in zip(axes, panels, strict=False):
        for mechanism, line in table.groupby("mechanism"):
            line = line.sort_values(axis)
            if column == "s_per_epoch":
                for how, timed in timed_alike(line):
                    ax.plot(
                        timed[axis],
                        timed[column],
                        marker=markers.get(how.get("device"), "o"),
                        linestyle="--" if how.get("batches") == "split" else "-",
                        color=colors[mechanism],
                    )
            else:
                ax.errorbar(
                    line[axis],
                    line[f"{column}|mean"],
                    yerr=line[f"{column}|std"].fillna(0),
                    marker="o",
                    capsize=3,
                    color=colors[mechanism],
                    label=mechanism,
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table[axis].unique()), [str(v) for v in sorted(table[axis].unique())])
        ax.set_xlabel("sequence length N" if axis == "seq_len" else "batch size (sequences)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(markers) > 1:
        handles += [plt.Line2D([], [], color="black", marker=m, linestyle="", label=d) for d, m in markers.items()]
    if "batches" in table and table["batches"].nunique() > 1:
        handles.append(plt.Line2D([], [], color="black", linestyle="--", label="batches split (s/epoch)"))
    labels = [h.get_label() for h in handles]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(title + "\n(mean over seeds; bars: ± std where several seeds exist)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto(frame: pd.DataFrame, protocol: str, title: str, path: Path, colors: dict) -> None:
    column = f"ndcg@10:{protocol}"
    points = frame.dropna(subset=[column]).sort_values("train_minutes")
    markers = dict(zip(sorted(points["seq_len"].unique()), "osD^vP*X", strict=False))
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for _, run in points.iterrows():
        ax.scatter(
            run["train_minutes"], run[column], color=colors[run["mechanism"]], marker=markers[run["seq_len"]], s=36
        )
    best, front = -1.0, []
    for _, run in points.iterrows():
        if run[column] > best:
            best = run[column]
            front.append((run["train_minutes"], run[column]))
    handles = [
        plt.Line2D([], [], color=c, marker="o", linestyle="", label=m)
        for m, c in colors.items()
        if m in set(points["mechanism"])
    ]
    handles += [plt.Line2D([], [], color="black", marker=mk, linestyle="", label=f"N={n}") for n, mk in markers.items()]
    if front:
        (line,) = ax.plot(*zip(*front, strict=False), linestyle="--", color="grey", label="Pareto front")
        handles.append(line)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_xlabel("training time until stopping (min, excluding evaluation)")
    ax.set_ylabel(f"test NDCG@10 ({PROTOCOL_NAMES.get(protocol, protocol)})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curves(frame: pd.DataFrame, title: str, path: Path, colors: dict) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    styles = ["-", "--", ":", "-."]
    for index, (_, run) in enumerate(frame.sort_values(["mechanism", "seq_len", "batch_size", "seed"]).iterrows()):
        history = run["history"]
        ax.plot(
            [h["epoch"] for h in history],
            [h["valid_ndcg@10"] for h in history],
            color=colors[run["mechanism"]],
            linestyle=styles[index % 4],
            linewidth=1,
            label=f"{run['mechanism']} N={run['seq_len']} B={run['batch_size']} seed {run['seed']}",
        )
    ax.set_xlabel("epoch")
    protocols = sorted(set(frame["selected_on"]))
    ax.set_ylabel(f"validation NDCG@10 ({', '.join(PROTOCOL_NAMES.get(p, p) for p in protocols)})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def by_history(strata: dict[str, pd.DataFrame], title: str, path: Path, colors: dict) -> None:
    """Test NDCG@10 against N within each history-length range (columns), one row of panels per protocol: whom a
    longer window helps. `strata`: protocol -> per_user.strata_table of one batch size."""
    labels = [c.removeprefix("NDCG@10 ") for c in next(iter(strata.values())) if c.startswith("NDCG@10 ")]
    fig, axes = plt.subplots(len(strata), len(labels), figsize=(4.6 * len(labels), 3.6 * len(strata)), squeeze=False)
    for row, (protocol, table) in zip(axes, strata.items(), strict=True):
        for ax, label in zip(row, labels, strict=True):
            for mechanism, line in table.groupby("mechanism"):
                line = line.sort_values("N")
                seeds = dict(zip(line["N"], line["seeds"], strict=True))
                if len(set(seeds.values())) > 1:  # a step between N can then be partly a seed effect: say so
                    mechanism_label = f"{mechanism} (seeds: {', '.join(f'N={n}: {k}' for n, k in seeds.items())})"
                else:
                    mechanism_label = mechanism
                ax.plot(line["N"], line[f"NDCG@10 {label}"], marker="o", color=colors[mechanism], label=mechanism_label)
            windows = sorted(table["N"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(windows, [str(n) for n in windows])
            ax.set_title(f"history {label} items ({int(table[f'users {label}'].iloc[0])} users)", fontsize=9)
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(f"test NDCG@10 ({PROTOCOL_NAMES.get(protocol, protocol)})")
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8, frameon=False)
    fig.suptitle(
        title + "\n(finished runs that kept their per-user ranks; mean over seeds; paired differences between windows, "
        "seed by seed: the report's table 'What the window changes')",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
