"""How much of Mamba's state survives k steps, in trained recall runs and at initialisation.

A selective scan keeps what it saw k positions back only through the decays exp(delta_t A) of the positions between:
survival(e, s) = exp(A[e, s] * sum of delta_t[e] over the k steps). The recall task asks for the item k back, so a
model whose every channel forgets faster than that cannot answer, and one that learnt to keep a channel can. This
reads, for each run folder (its config.json and best.pt), each Mamba layer's largest median survival over the task's
test sequences (median over sequences of each channel, then the best channel), and the share of channels keeping
more than 1 %; the same for the untrained model of the run's seed. One JSON row per run into --out.

    python scripts/mamba_memory_probe.py runs/longrange-diagnosis/*recall*mamba* \
        --out results/longrange/mamba-memory.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import models.attention.mamba as mamba_module
from bench.environment import environment
from bench.schema import upgrade
from bench.training.checkpoint import load_checkpoint
from bench.training.config import TrainConfig
from bench.training.train import build_model, get_dataset


def survival(model, histories: list[list[int]], distance: int) -> list[dict]:
    """Per Mamba layer: the best channel's median survival over the last `distance` steps, and the share of
    channels whose median survival exceeds 1 %."""
    captured = []
    scan = mamba_module.selective_scan

    def capturing_scan(u, delta, a_log, *args, **kwargs):
        captured.append((delta.detach(), a_log.detach()))  # delta (B, N, E), a_log (E, S)
        return scan(u, delta, a_log, *args, **kwargs)

    mamba_module.selective_scan = capturing_scan
    try:
        with torch.no_grad():
            model.score_next(histories)
    finally:
        mamba_module.selective_scan = scan
    layers = []
    for delta, a_log in captured:
        summed = delta[:, -distance:, :].sum(1)  # (B, E): the steps between the evidence and the answer
        kept = torch.exp(-torch.exp(a_log)[None] * summed[..., None])  # (B, E, S), A = -exp(a_log)
        median = kept.median(0).values  # (E, S)
        layers.append({"best_channel": float(median.max()), "share_above_1pct": float((median > 0.01).float().mean())})
    return layers


def probe(run: Path, users: int = 256) -> dict:
    config_dict = upgrade(json.loads((run / "config.json").read_text()))
    config = TrainConfig(**{k: v for k, v in config_dict.items() if k in TrainConfig.__dataclass_fields__})
    dataset = get_dataset(config)
    distance = int(config.dataset.rsplit("-k", 1)[1])
    histories = [sequence[:-1][-config.seq_len :] for sequence in dataset.sequences[-users:]]  # test users' inputs
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.num_items).eval()
    untrained = survival(model, histories, distance)
    best = load_checkpoint(run / "best.pt")
    model.load_state_dict(best["model"])
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
    return {
        "run": run.name,
        "distance": distance,
        "lr": config.lr,
        "hidden": config.hidden,
        "attention_options": config.attention_options,
        "best_epoch": best.get("epoch"),
        "test_ndcg@10": results.get("test", {}).get("all", {}).get("ndcg@10"),
        "trained": survival(model, histories, distance),
        "untrained": untrained,
        **environment("cpu"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of Mamba on a recall task")
    parser.add_argument("--out", default="results/longrange/mamba-memory.json", help="the rows (JSON list)")
    args = parser.parse_args()
    rows = [probe(run) for run in args.runs if (run / "best.pt").exists()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    for row in rows:
        trained, untrained = (
            ", ".join(f"{layer['best_channel']:.3g} ({layer['share_above_1pct']:.0%})" for layer in row[state])
            for state in ("trained", "untrained")
        )
        print(f"k={row['distance']} {row['run']}: NDCG@10 {row['test_ndcg@10']}; kept {trained}; untrained {untrained}")
