"""Add the probe reading to long-range cells that finished before training recorded it; print top-1 at the probes.

    python scripts/longrange_probes.py results/sweeps/longrange-cpu.jsonl runs/longrange/<cell> [...]

A long-range test scores each held-out user at one position, the last. Cells trained since the probes were added
also record NDCG@10 over every test position whose evidence lies k back (`test_probes`); for an older cell whose
run folder is still here, this reads its selected checkpoint (best.pt), computes that reading and adds it to the
cell's latest row in place (the row keeps its run, so the results hold each run once).
It also prints top-1 accuracy at the probe positions and at the last one: the evidence docs/longrange.md quotes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.data.longrange import longrange_dataset
from bench.environment import git_commit
from bench.results import load_rows, result_parts, results_writer, rewrite_parts
from bench.training.config import TrainConfig
from bench.training.evaluate import evaluate_probes
from bench.training.train import build_model


def top1_at_probes(model, probes) -> tuple[float, float]:
    """(top-1 accuracy over every probe position but the last, at the last), pooled over users."""
    hits, counts = [0, 0], [0, 0]
    with torch.no_grad():
        for start in range(0, len(probes), 32):
            chunk = probes[start : start + 32]
            items = torch.tensor([list(p) for p in chunk])  # (b, L)
            marked = torch.tensor([p.scored for p in chunk])[:, 1:]  # (b, L - 1)
            best = model.encoder.item_scores(model.encoder(items[:, :-1])).argmax(-1) + 1  # (b, L - 1)
            correct = (best == items[:, 1:]) & marked
            hits[0] += int(correct[:, :-1].sum())
            counts[0] += int(marked[:, :-1].sum())
            hits[1] += int(correct[:, -1].sum())
            counts[1] += int(marked[:, -1].sum())
    return hits[0] / max(counts[0], 1), hits[1] / max(counts[1], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the long-range results file holding the cells' rows")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (config.json, best.pt) of finished cells")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with results_writer(args.results):  # refused while a sweep writes there: stop it first (it resumes)
        rows = [row for part in result_parts(args.results) for row in load_rows(part)]
        for run in args.runs:
            add_probes(args.results, rows, run)


def add_probes(results: Path, rows: list[dict], run: Path) -> None:
    """Add the probe reading to the run's latest row (nothing when it has one already)."""
    config = TrainConfig(**json.loads((run / "config.json").read_text()))
    mine = [r for r in rows if r.get("level") == "train" and (r.get("config") or {}).get("out") == config.out]
    if not mine:
        raise SystemExit(f"{run}: no row in {results} was trained in this folder")
    row = mine[-1]
    dataset = longrange_dataset(config.dataset)
    model = build_model(config, dataset.num_items)
    model.load_state_dict(torch.load(run / "best.pt", weights_only=True)["model"])
    probes = row.get("test_probes")
    if not probes:  # a cell that has the reading already is only read (top-1)
        probes = evaluate_probes(model, dataset.probes, "cpu")
        added = {"from": "best.pt", "commit": git_commit()}
        rewrite_parts(results, lambda r: {**r, "test_probes": probes, "probes_added": added} if r == row else r)
    model.eval()
    elsewhere, last = top1_at_probes(model, dataset.probes)
    print(
        f"{run.name}: test NDCG@10 {row['test']['all']['ndcg@10']:.3f} at the last position; "
        f"{probes['ndcg@10']:.3f} over {probes['positions']} positions k back; "
        f"top-1 {elsewhere:.3f} at those before the last, {last:.3f} at the last"
    )


if __name__ == "__main__":
    main()
