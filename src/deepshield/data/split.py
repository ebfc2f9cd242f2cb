"""Group-aware, label-stratified train/val/test split with a fixed seed.

Whole groups are assigned, so no group (a DFDC original with all its fakes, an FF++ pair) ever
straddles two splits. Groups are visited in a seeded random order and each goes to the split that
most lacks crops of the labels that group holds, relative to the target ratios; that keeps every
split's real/fake balance close to the dataset's wherever the group sizes allow.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

from deepshield.data.manifest import SPLITS, CropRecord
from deepshield.data.sources import LABELS
from deepshield.errors import DeepShieldError


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); two values mean no test split; the sum must be 1 (±0.01)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError as exc:
        raise DeepShieldError(f"--split {text!r}: expected numbers like 0.8,0.1,0.1") from exc
    if len(values) == 2:
        values.append(0.0)
    if (
        len(values) != 3
        or not all(math.isfinite(v) and v >= 0 for v in values)  # nan passed every comparison
        or abs(sum(values) - 1.0) > 0.01
        or values[0] <= 0
    ):
        raise DeepShieldError(f"--split {text!r}: expected train,val,test fractions, train > 0, summing to 1")
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def empty_split_warning(split: str) -> str:
    """Said by prepare and dataset stats alike (stats asked "too few groups for the requested ratios?")."""
    return (
        f"split {split} is empty: too few groups (people or videos) for the --split fractions; add data or change "
        "--split"
    )


def one_label_split_warning(split: str, missing: Sequence[str]) -> str:
    """A split without one label: its figures (evaluate, calibrate, compare --split) need both, and
    `dataset balance` adds to train only, so the way out is more groups, or another split."""
    labels = " and no ".join(missing)
    return f"split {split} has no {labels} faces, which evaluate and calibrate need there: {one_label_split_remedy(labels)}"


def one_label_split_remedy(labels: str) -> str:
    """How a val or test split gets the label it lacks (dataset stats' warning, calibrate's refusal)."""
    return f"add {labels} files of more people or videos, or prepare again with another --split or --seed"


# A split whose majority label has more than this many faces per face of the other is one a model leans
# towards; nearer than that (6 real against 7 fake) it is as balanced as whole source files allow, no matter.
UNBALANCED_RATIO = 1.5


def unbalanced(minority: int, majority: int) -> bool:
    """Whether a split of these two labels' face counts wants faces of the minority added."""
    return majority > UNBALANCED_RATIO * minority


def group_label_counts(records: Sequence[CropRecord]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for record in records:
        counts.setdefault(record.group, Counter())[record.label] += 1
    return counts


def assign_groups(
    counts: Mapping[str, Counter],
    ratios: Sequence[float],
    seed: int,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A split name for every group. Groups in `fixed` keep theirs (and count towards the targets)."""
    fixed = dict(fixed or {})
    totals: Counter[str] = Counter()
    for counter in counts.values():
        totals.update(counter)
    current: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
    for group, split in fixed.items():
        if group in counts:
            current[split].update(counts[group])
    free = sorted(group for group in counts if group not in fixed)
    random.Random(seed).shuffle(free)
    usable = [i for i, ratio in enumerate(ratios) if ratio > 0]
    result = {group: split for group, split in fixed.items() if group in counts}
    for group in free:
        counter = counts[group]
        needs = {
            i: sum(
                counter[label] * (ratios[i] * totals[label] - current[SPLITS[i]][label]) / totals[label]
                for label in LABELS
                if totals[label]
            )
            for i in usable
        }
        best = max(usable, key=needs.__getitem__)  # of equal needs, the first split
        result[group] = SPLITS[best]
        current[SPLITS[best]].update(counter)
    return result


def apply_split(
    records: Sequence[CropRecord], ratios: Sequence[float], seed: int, fixed: Mapping[str, str] | None = None
) -> list[CropRecord]:
    splits = assign_groups(group_label_counts(records), ratios, seed, fixed)
    return [record.with_split(splits[record.group]) for record in records]


def split_counts(records: Sequence[CropRecord]) -> dict[str, Counter]:
    out: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
    for record in records:
        out.setdefault(record.split, Counter())[record.label] += 1
    return out
