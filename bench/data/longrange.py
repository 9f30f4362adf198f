"""Long-range tasks: synthetic next-item data with a dependency planted at a chosen distance k.

How far back can a mechanism look? Each task makes the target of every evaluated user depend on items exactly k
(or at least k) steps earlier, so accuracy against k says where a mechanism stops using the past. The same SASRec,
training loop, full-ranking protocol and metrics as the real datasets are used; only the data is generated.

Tasks (a name is `longrange-<task>-k<distance>`, e.g. `longrange-recall-k1024`; `-i8192` picks another vocabulary):

  recall  needle among distractors: the first min(k, 256) positions of a user's sequence hold runs of 8 "phrase"
          items (each seen once by that user) among random distractors; every phrase item comes back exactly k
          steps after its first appearance, all other positions are random distractors. The target is a phrase
          item whose only earlier occurrence is k steps back: find where its predecessor was, copy what followed.
  repeat  a personal playlist of P = k items played in a loop (k + min(k, 256) plays, at least 64), 10 % of plays
          replaced by random items (the target and the play k steps before it stay clean). Every play after the
          first loop repeats the one a period back.
  taste   a long-term preference under short-term noise: 32 items that each come from the user's category with
          probability 1/2 (else any item), then k - 1 random items, then the target, from the user's category.
          No single item decides it: the evidence is spread over the 16-odd category items at distance >= k.

Users are split three ways instead of leave-one-out: training users are trained on every position of their whole
sequence (the planted dependency included), validation and test users are held out and their last item is the
target. Every evaluated target therefore sits at exactly the task's distance from its evidence.

Each dataset records two reference levels, computed over the test users, that the reports draw beside the results:
  ceiling  the expected NDCG@10 of the Bayes-optimal ranking (it knows the generator): 1 for recall and repeat
           (the target is determined); for taste, from the exact posterior over the user's category.
  chance   NDCG@10 of ranking uniformly at random among the items the user has already seen (recall, repeat: a
           model that knows the target is a repeat but not which one) or among all items (taste).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .dataset import LeaveOneOut, SequenceDataset

TASKS = ("recall", "repeat", "taste")
DISTANCES = (8, 64, 256, 1024, 4096)
NAME = re.compile(r"^longrange-(?P<task>[a-z]+)-k(?P<distance>\d+)(-i(?P<items>\d+))?$")

SPAN = 256  # recall, repeat: at most this many positions carry the dependency (the cost stays ~ k, not 2k)
RUN = 8  # recall: phrase items come in runs, so a copied item has a copied predecessor to match on
PHRASE_SHARE = 0.25  # recall: the share of first-half runs that are phrases (the last run always is)
STEPS_PER_EPOCH = 125  # training users = 125 batches
NOISE = 0.1  # repeat: the share of plays replaced by a random item
EVIDENCE = 32  # taste: the items carrying the preference, before the k - 1 noise items
TASTE_SHARE = 0.5  # taste: the chance that an evidence item comes from the user's category
CATEGORY_SIZE = 8  # taste: items per category


def dcg_at_10(rank: int) -> float:
    return 1 / math.log2(rank + 1) if rank <= 10 else 0.0


def uniform_ndcg_at_10(candidates: int) -> float:
    """Expected NDCG@10 of a target placed uniformly at random among `candidates` items."""
    return sum(dcg_at_10(r) for r in range(1, min(10, candidates) + 1)) / candidates


@dataclass(frozen=True)
class LongRangeTask:
    task: str  # recall | repeat | taste
    distance: int  # k: how far back the evidence for the target lies
    items: int = 2048  # vocabulary (item ids 1..items)
    valid_users: int = 256
    test_users: int = 1000
    seed: int = 0  # of the data: every mechanism and training seed sees the same users

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"long-range task must be one of {TASKS}, got {self.task!r}")
        if self.distance < RUN or self.distance % RUN:
            raise ValueError(f"long-range distance k must be a multiple of {RUN} and >= {RUN}, got {self.distance}")
        if self.items < 4 * SPAN or self.items % CATEGORY_SIZE:
            raise ValueError(f"long-range vocabulary must be >= {4 * SPAN} and a multiple of {CATEGORY_SIZE}")

    @classmethod
    def from_name(cls, name: str) -> LongRangeTask:
        match = NAME.match(name)
        if not match:
            raise ValueError(
                f"{name!r} is not a long-range task name; expected longrange-<task>-k<distance>[-i<items>]"
            )
        items = {"items": int(match["items"])} if match["items"] else {}
        return cls(match["task"], int(match["distance"]), **items)

    @property
    def name(self) -> str:
        vocabulary = "" if self.items == LongRangeTask.items else f"-i{self.items}"
        return f"longrange-{self.task}-k{self.distance}{vocabulary}"

    @property
    def span(self) -> int:
        """recall, repeat: how many positions after the first k items repeat an item seen k steps before."""
        if self.task == "repeat" and self.distance < 64:
            return 64 - self.distance  # short periods loop several times
        return min(self.distance, SPAN)

    @property
    def length(self) -> int:
        """Items per user, the target included."""
        if self.task == "taste":
            return EVIDENCE + self.distance
        return self.distance + self.span

    @property
    def window(self) -> int:
        """The N that holds a whole history: what the presets train with."""
        return self.length

    @property
    def batch_size(self) -> int:
        """Shorter batches for longer sequences (what the presets train with): the planted positions per batch stay
        about the same (~450 for recall), and so does the number of steps per epoch."""
        return 32 if self.length <= 512 else 16 if self.length <= 2048 else 8

    @property
    def train_users(self) -> int:
        return STEPS_PER_EPOCH * self.batch_size

    def generate(self) -> SequenceDataset:
        rng = np.random.default_rng([self.seed, TASKS.index(self.task), self.distance])
        make = {"recall": self._recall, "repeat": self._repeat, "taste": self._taste}[self.task]
        groups = {"train": self.train_users, "valid": self.valid_users, "test": self.test_users}
        sequences, user_ids, categories, probes = [], [], [], []
        for group, count in groups.items():
            for index in range(count):
                sequence, scored, category = make(rng)
                sequences.append(
                    ScoredSequence(sequence.tolist(), scored.tolist()) if group == "train" else sequence.tolist()
                )
                user_ids.append(f"{group}-{index}")
                categories.append(category)
                if group == "test" and self.task != "taste":  # taste's one position at distance k is the target
                    probes.append(ScoredSequence(sequence.tolist(), scored.tolist()))
        train_end, valid_end = self.train_users, self.train_users + self.valid_users
        split = LeaveOneOut(
            train=sequences[:train_end],
            valid=[(s[:-1], s[-1]) for s in sequences[train_end:valid_end]],
            test=[(s[:-1], s[-1]) for s in sequences[valid_end:]],
            test_users=list(range(valid_end, len(sequences))),
        )
        dataset = SequenceDataset(
            self.name,
            sequences,
            self.items,
            user_ids,
            source=f"generated: {self.name} (items {self.items}, data seed {self.seed})",
            format="generated",
            split=split,
        )
        dataset.levels = self._levels(split.test, categories[valid_end:])
        dataset.probes = probes or None
        return dataset

    # -- generators: the sequence (target last), where a dependency is planted (the training targets), the user's
    # -- category (taste) -----------------------------------------------------------------------------------------

    def _recall(self, rng) -> tuple[np.ndarray, np.ndarray, None]:
        k, span = self.distance, self.span
        runs = rng.random(span // RUN) < PHRASE_SHARE
        runs[-1] = True  # the target's own run
        is_phrase = np.zeros(self.length, dtype=bool)
        is_phrase[:span] = np.repeat(runs, RUN)  # phrase items in the first `span` positions ...
        is_phrase[k:] = is_phrase[:span]  # ... and again exactly k later
        order = rng.permutation(self.items) + 1
        phrase = order[: int(runs.sum()) * RUN]  # distinct: each phrase item appears once before its copy
        sequence = rng.choice(order[len(phrase) :], size=self.length)  # distractors everywhere else
        sequence[:span][is_phrase[:span]] = phrase
        sequence[k:][is_phrase[k:]] = phrase
        planted = is_phrase.copy()
        planted[:k] = False  # the copies
        return sequence, planted, None

    def _repeat(self, rng) -> tuple[np.ndarray, np.ndarray, None]:
        period, length = self.distance, self.length
        # NOTE: a playlist longer than half the vocabulary repeats items; the period then identifies the target,
        # a unique earlier occurrence no longer does
        playlist = rng.choice(self.items, size=period, replace=period > self.items // 2) + 1
        sequence = playlist[np.arange(length) % period]
        noisy = rng.random(length) < NOISE
        noisy[[length - 1, length - 1 - period]] = False  # the target and the play it repeats stay clean
        sequence[noisy] = rng.integers(1, self.items + 1, size=int(noisy.sum()))
        planted = np.zeros(length, dtype=bool)
        planted[period:] = sequence[period:] == sequence[:-period]  # the plays that repeat the one a period back
        return sequence, planted, None

    def _taste(self, rng) -> tuple[np.ndarray, np.ndarray, int]:
        categories = self.items // CATEGORY_SIZE
        category = int(rng.integers(categories))
        members = category * CATEGORY_SIZE + 1 + np.arange(CATEGORY_SIZE)  # item i is in category (i - 1) // 8
        evidence = rng.integers(1, self.items + 1, size=EVIDENCE)
        from_taste = rng.random(EVIDENCE) < TASTE_SHARE
        evidence[from_taste] = rng.choice(members, size=int(from_taste.sum()))
        noise = rng.integers(1, self.items + 1, size=self.distance - 1)
        planted = np.zeros(self.length, dtype=bool)
        planted[1:EVIDENCE] = True  # the evidence, predictable from the evidence before it
        planted[-1] = True  # the target: the evidence is k steps back
        return np.concatenate([evidence, noise, [rng.choice(members)]]), planted, category

    # -- reference levels ---------------------------------------------------------------------------------------

    def _levels(self, test: list[tuple[list[int], int]], categories: list) -> dict:
        if self.task == "taste":
            ceiling = float(np.mean([self.taste_ceiling(history) for history, _ in test]))
            chance = uniform_ndcg_at_10(self.items)
            chance_of = "uniform over all items"
        else:
            ceiling = 1.0
            chance = float(np.mean([uniform_ndcg_at_10(len(set(history))) for history, _ in test]))
            chance_of = "uniform over the items already seen"
        return {"ceiling_ndcg@10": ceiling, "chance_ndcg@10": chance, "chance": chance_of, "distance": self.distance}

    def taste_ceiling(self, history: list[int]) -> float:
        """Expected NDCG@10 of the Bayes-optimal ranking for one taste user.

        The posterior over the user's category comes from the evidence items alone (the noise is independent of
        it). The best ranking puts the most probable category's 8 items first (ranks 1-8), the second's next
        (9-16), and the target is uniform within its category."""
        evidence = np.asarray(history[:EVIDENCE]) - 1
        categories = self.items // CATEGORY_SIZE
        hits = np.bincount(evidence // CATEGORY_SIZE, minlength=categories)  # evidence items per category
        inside = math.log(TASTE_SHARE / CATEGORY_SIZE + (1 - TASTE_SHARE) / self.items)
        outside = math.log((1 - TASTE_SHARE) / self.items)
        log_posterior = hits * (inside - outside)  # the factor common to every category dropped
        posterior = np.exp(log_posterior - log_posterior.max())
        posterior /= posterior.sum()
        first, second = np.sort(posterior)[::-1][:2]
        block = [sum(dcg_at_10(r) for r in range(start, start + CATEGORY_SIZE)) for start in (1, 1 + CATEGORY_SIZE)]
        return float((first * block[0] + second * block[1]) / CATEGORY_SIZE)


class ScoredSequence(list):
    """A training sequence that says which of its items are training targets (`scored`, one bool per item): only
    the planted ones. NOTE: SASRec's loss is then taken where the generator planted a dependency, not at the
    random distractors and noise (which carry nothing to learn), as the associative-recall benchmarks do
    (Zoology's MQAR scores the answers only); it also keeps the item scores off thousands of noise positions."""

    def __init__(self, items: list[int], scored: list[bool]):
        super().__init__(items)
        self.scored = scored


def is_longrange(name: str) -> bool:
    return name.startswith("longrange-")


def longrange_dataset(name: str) -> SequenceDataset:
    return LongRangeTask.from_name(name).generate()
