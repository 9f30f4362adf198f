"""Training settings: TrainConfig (every setting of a run, recorded in its results and checkpoint) and the named
recipes that bundle published settings (`--recipe`), each setting still overridable one by one."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

from models import recommender_class
from models.sasrec import TRAIN_WINDOWS

from ..environment import unknown_name

PROTOCOLS = ("full", "uni100", "pop100")
FULL_RANKING = ("all", "seen_excluded")  # the two protocols every full-ranking evaluation reports
BATCHING = ("random", "by_length")
TRAIN_USERS = ("fixed", "fresh")

# Published training settings by name. `recbole` is the LinRec authors' RecBole setting (the
# defaults of TrainConfig, their width 128 x 8 heads set separately); `sasrec-plus` is SASRec+
# (Klenitskiy & Vasilev, RecSys 2023, arXiv:2309.07602): pre-LN with a final LayerNorm, item
# embeddings x sqrt(d), no embedding LayerNorm, one head, ReLU feed-forward of the model width,
# dropout 0.1, ML-1M as preprocessed for BERT4Rec (items with >= 5 ratings: 3,416).
# `sasrec-plus-port` is SASRec+ as its code runs (the PyTorch SASRec port it adapts, trained by its
# scripts): the reference block (only queries normalised, residuals from the normalised input),
# dropout inside the feed-forward too, xavier q/k/v weights, LayerNorm eps 1e-8, random batches.
# NOTE: that code numbers positions from the oldest item of a right-padded window; here positions
# count from the most recent item (left padding), which lets a batch be cut to its longest sequence.
RECIPES: dict[str, dict] = {
    "recbole": {},
    "sasrec-plus": {
        "norm": "pre",
        "embedding_scale": True,
        "embedding_norm": False,
        "hidden": 64,
        "heads": 1,
        "layers": 2,
        "inner": 64,
        "activation": "relu",
        "dropout": 0.1,
        "min_count": 5,
        "batch_size": 128,
        "lr": 1e-3,
        "epochs": 200,
        "patience": 10,
        "select_protocol": "seen_excluded",
        "batching": "by_length",
    },
}
RECIPES["sasrec-plus-port"] = {
    **RECIPES["sasrec-plus"],
    "norm": "sasrec",
    "feed_forward_dropout": True,
    "attention_init": "xavier",
    "layer_norm_eps": 1e-8,
    "batching": "random",
}
# The long-range level (bench.data.longrange): a small SASRec+ block that learns to copy from far back. Every
# cell runs all its epochs: copying is learnt suddenly, after a plateau that early stopping would cut short.
RECIPES["longrange"] = {
    **RECIPES["sasrec-plus"],
    "hidden": 64,
    "heads": 2,
    "inner": 64,
    "activation": "gelu",
    "lr": 3e-3,
    # NOTE: no attention dropout: with it torch's CPU sdpa leaves its flash kernel (12x slower at N = 4352)
    "attention_dropout": 0.0,
    "epochs": 16,
    "patience": 16,
    "select_protocol": "all",  # the target was seen before: excluding seen items would remove it
    "batching": "random",
}


@dataclass
class TrainConfig:
    dataset: str = "ml-1m"  # registered name, a file path, "synthetic" or a long-range task (longrange-recall-k64)
    data_dir: str | None = None  # folder of the datasets (else $LINREC_DATA, then ../shared/data)
    data_format: str | None = None  # a file's format when its name and lines do not tell (bench.data.FORMATS)
    min_count: int = 0  # k-core filtering (the authors: 5 for Gowalla)
    model: str = "sasrec"  # sasrec | bert4rec
    objective: str = "all_positions"  # SASRec only: all_positions | last_position
    attention: str = "sdpa"  # a registered mechanism (sdpa, linrec, mamba, ...: available_attentions()) or a plugin's
    attention_options: dict = field(default_factory=dict)
    causal: bool | None = None  # SASRec: default causal for all_positions; BERT4Rec: always bidirectional
    seq_len: int = 200  # N: the window of most recent items the model reads
    hidden: int = 64  # model width
    heads: int = 2  # attention heads (hidden must divide by it)
    layers: int = 2  # encoder blocks
    inner: int = 256  # feed-forward width
    dropout: float = 0.2  # embeddings and residual branches
    attention_dropout: float | None = None  # None: the same as dropout
    norm: str = "post"  # LayerNorm placement
    activation: str = "gelu"  # feed-forward activation
    embedding_scale: bool = False  # item embeddings x sqrt(hidden)
    embedding_norm: bool = True  # LayerNorm on the summed embeddings
    feed_forward_dropout: bool = False  # dropout inside the feed-forward too (SASRec's code)
    layer_norm_eps: float = 1e-12  # LayerNorm's epsilon (RecBole's)
    attention_init: str = "normal"  # q/k/v weights: "normal" (std 0.02) or "xavier" (nn.MultiheadAttention's)
    positions: str = "from_newest"  # position numbering: "from_newest" or "from_oldest" (SASRec's code)
    # SASRec all_positions: the "last" N + 1 items of each user, or "all": windows covering the whole history
    train_windows: str = "last"
    # generated tasks: "fixed" training users, or "fresh" ones drawn anew every epoch (unlimited data: a mechanism
    # has to learn the task's rule, it cannot memorise a finite training set)
    train_users: str = "fixed"
    # "random" batches, or "by_length": similar lengths together, each batch cut to its longest sequence
    batching: str = "random"
    # run each training batch as groups of similar length, each cut to its longest (the same loss; less padding)
    split_batches: bool = True
    mask_ratio: float = 0.2  # BERT4Rec
    prefixes_per_user: int = 4  # SASRec last_position: training prefixes sampled per user and epoch
    # BERT4Rec: copies of each sequence per epoch, each masked afresh (the original's dupe factor)
    masks_per_user: int = 1
    epochs: int = 100  # at most
    batch_size: int = 128  # sequences (windows) per training step
    lr: float = 1e-3  # Adam's learning rate
    weight_decay: float = 0.0  # Adam's L2 penalty
    patience: int = 10  # epochs without a better valid NDCG@10 before stopping
    max_minutes: float | None = None  # wall-clock budget; stops after the epoch that crosses it
    eval_batch_size: int = 512  # users per evaluation step
    protocol: str = "full"  # full ranking, or 100 sampled negatives (uniform / by popularity)
    # early stopping reads this protocol's NDCG@10; None: "all" (full ranking) or the sampled one
    select_protocol: str | None = None
    recipe: str | None = None  # the named recipe these settings started from (recorded; applied by with_recipe)
    seed: int = 2000  # initialisation, batches and dropout
    device: str = "cpu"  # where to train
    threads: int | None = None  # torch threads (default: torch's)
    out: str = "runs/latest"  # run folder: checkpoints, results.json, test ranks
    synthetic_users: int = 500  # --dataset synthetic: users generated
    synthetic_items: int = 200  # --dataset synthetic: items generated

    def __post_init__(self):
        recommender_class(self.model)  # a clear error for an unknown --model
        if self.protocol not in PROTOCOLS:
            raise ValueError(unknown_name("--protocol", "protocol", self.protocol, PROTOCOLS))
        if self.train_windows not in TRAIN_WINDOWS:
            raise ValueError(f"--train-windows must be one of {TRAIN_WINDOWS}, got {self.train_windows!r}")
        if self.train_users not in TRAIN_USERS:
            raise ValueError(f"--train-users must be one of {TRAIN_USERS}, got {self.train_users!r}")
        if self.batching not in BATCHING:
            raise ValueError(f"--batching must be one of {BATCHING}, got {self.batching!r}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(unknown_name("--recipe", "recipe", self.recipe, RECIPES))
        allowed = FULL_RANKING if self.protocol == "full" else (self.protocol,)
        if self.select_protocol is None:
            self.select_protocol = allowed[0]
        if self.select_protocol not in allowed:
            raise ValueError(
                f"--select-protocol must be one of {allowed} with --protocol {self.protocol}, got "
                f"{self.select_protocol!r}"
            )
        for name in (
            "epochs",
            "batch_size",
            "seq_len",
            "hidden",
            "heads",
            "layers",
            "prefixes_per_user",
            "masks_per_user",
            "patience",
            "threads",  # None: torch's default
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_minutes is not None and self.max_minutes < 0:  # 0: no epoch (a snapshot tests the best one)
            raise ValueError(f"--max-minutes must be >= 0, got {self.max_minutes}")
        for name in ("dropout", "attention_dropout"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")


def with_recipe(recipe: str | None, **settings) -> TrainConfig:
    """A TrainConfig from a named recipe, with any setting overridden by `settings`."""
    return TrainConfig(**{**RECIPES.get(recipe, {}), **settings, "recipe": recipe})


RESUMABLE_CHANGES = ("out", "epochs", "max_minutes", "patience", "threads", "data_dir")


def fixed_settings(config: dict) -> dict:
    """The settings a resumed run must share with the run it continues.

    A setting added to TrainConfig after a checkpoint was written counts as matching while it
    keeps its default, so old checkpoints stay resumable.
    """
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES and not (k in defaults and v == defaults[k])}


# the values a training setting takes, named in --help (the config validates them, with the closest names)
SETTING_CHOICES = {
    "model": "sasrec | bert4rec",
    "objective": "all_positions | last_position",
    "norm": "pre | post | sasrec",
    "activation": "gelu | relu",
    "attention_init": "normal | xavier",
    "positions": "from_newest | from_oldest",
    "train_windows": "last | all",
    "train_users": "fixed | fresh (generated tasks)",
    "batching": "random | by_length",
    "protocol": "full | uni100 | pop100",
    "select_protocol": "all | seen_excluded (full); uni100 | pop100 (sampled)",
    "recipe": "recbole | sasrec-plus | sasrec-plus-port | longrange",
    "device": "cpu | cuda | cuda:N",
}


def field_notes() -> dict[str, str]:
    """Each TrainConfig field's comment in its source (same line, or the comment line above): its --help text."""
    import inspect
    import re

    notes, above = {}, ""
    for line in inspect.getsource(TrainConfig).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above = (above + " " + stripped.lstrip("# ")).strip()
            continue
        found = re.match(r"(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", stripped)
        if found:
            notes[found.group(1)] = (found.group(2) or above).strip()
        above = ""
    return notes


def run_header(config: TrainConfig, dataset, device: str, backend: str | None, threads: int) -> str:
    """The one line `train` prints before its first epoch: what trains on what, where."""
    options = "".join(f" {k}={v}" for k, v in config.attention_options.items())
    kernel = f" (kernel: {backend})" if backend else ""
    return (
        f"train: {dataset.name} ({dataset.num_users:,} users, {dataset.num_items:,} items), {config.model} with "
        f"{config.attention}{options}{kernel}, N={config.seq_len}, batch {config.batch_size}, seed {config.seed}, "
        f"{device}, {threads} thread(s), recipe {config.recipe or 'recbole'} -> {config.out}"
    )
