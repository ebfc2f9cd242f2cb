"""`deepshield dataset stats` and `dataset balance` on small image datasets built here."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepshield.cli.main import main
from deepshield.data import balance
from deepshield.data.extract import ExtractSettings
from deepshield.data.layout import DatasetLayout
from deepshield.data.manifest import (
    CropRecord,
    DatasetInfo,
    ManifestError,
    load_crop,
    read_errors,
    read_info,
    read_manifest,
    read_manifest_file,
    write_info,
    write_manifest,
)
from deepshield.data.prepare import prepare_dataset
from deepshield.data.stats import compute_stats
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy, crop_face
from tests.conftest import deny_reading

SETTINGS = ExtractSettings(frames=1, policy=CropPolicy(size=64))


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    return cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)


def faces(folder: Path, small: np.ndarray, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        image = np.roll(small, 7 * (i % 9) - 28, axis=1)
        image = image[:, ::-1] if i % 2 else image
        image = np.clip(image.astype(np.int16) + (i * 5) % 30 - 15, 0, 255).astype(np.uint8)
        image[0, 0] = (i % 256, i // 256, 7)  # every photo its own bytes (index 18 apart repeated one, a copy)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def biased(tmp_path_factory, small) -> Path:
    """Reals only from 'studio', fakes only from 'web': the source alone tells the label."""
    raw = tmp_path_factory.mktemp("raw")
    faces(raw / "studio" / "real", small, 3)
    faces(raw / "web" / "fake" / "swapper", small, 5, start=10)
    out = tmp_path_factory.mktemp("ds") / "biased"
    prepare_dataset([raw / "studio", raw / "web"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    return out


def test_stats_counts_charts_and_source_warning(biased: Path, capsys):
    assert main(["dataset", "stats", str(biased)]) == 0
    captured = capsys.readouterr()
    assert "deepshield dataset stats: warning: real and fake faces come from different sources" in captured.err
    assert "only real faces from studio" in captured.err and "only fake faces from web" in captured.err
    assert captured.out.split("\n\n") == [
        "8 face crops from 8 files in 8 groups",
        "LABEL      REAL      FAKE     TOTAL\nall           3         5         8",
        "SPLIT      REAL      FAKE     TOTAL\ntrain         3         5         8\nval           0         0         0\n"
        "test          0         0         0",
        "SOURCE      REAL      FAKE     TOTAL\nstudio         3         0         3\nweb            0         5         5",
        "METHOD       REAL      FAKE     TOTAL\nnone            3         0         3\nswapper         0         5         5\n",
    ]
    stats_dir = DatasetLayout(biased).stats
    for name in ("labels", "splits", "sources", "methods"):
        png = stats_dir / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cv2.imread(str(png)).shape[0] > 100
    written = json.loads((stats_dir / "stats.json").read_text())
    assert (written["crops"], written["files"], written["groups"], written["by_label"]) == (
        8,
        8,
        8,
        {"real": 3, "fake": 5},
    )
    assert written["by_source"] == {"studio": {"real": 3, "fake": 0}, "web": {"real": 0, "fake": 5}}
    assert written["warnings"][0].startswith("real and fake faces come from different sources (only real faces")
    stats = compute_stats(read_manifest(biased))
    assert stats.by_label == {"real": 3, "fake": 5}
    assert stats.by_source == {"studio": {"real": 3, "fake": 0}, "web": {"real": 0, "fake": 5}}
    assert stats.by_method == {"none": {"real": 3, "fake": 0}, "swapper": {"real": 0, "fake": 5}}
    assert stats.by_split["train"] == {"real": 3, "fake": 5}


def test_stats_written_remove_the_temporary_files_killed_writers_left(biased: Path, capsys):
    # A dataset stats killed while it wrote stats.json or a chart left <file>.<its pid>.part for good (evaluate's
    # and tune's reports swept theirs).
    from tests.conftest import left_by_a_killed_writer

    stats_dir = DatasetLayout(biased).stats
    left = left_by_a_killed_writer(stats_dir / "stats.json", stats_dir / "labels.png")
    assert main(["dataset", "stats", str(biased)]) == 0
    assert [path for path in left if path.exists()] == []


def test_stats_of_a_dataset_that_cannot_be_written_in_are_printed(biased: Path, tmp_path: Path, monkeypatch, capsys):
    # A shared dataset this user may not write in printed no count, only a traceback (PermissionError).
    from tests.conftest import _denied

    shared = tmp_path / "shared"
    shutil.copytree(biased, shared, ignore=shutil.ignore_patterns("stats"))
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == DatasetLayout(shared).stats:
            raise _denied(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["dataset", "stats", str(shared)]) == 0
    captured = capsys.readouterr()
    assert "8 face crops" in captured.out and "studio" in captured.out
    assert (
        f"deepshield dataset stats: warning: charts not saved, the dataset's folder cannot be written in ({shared}/stats: "
        in captured.err
    )
    assert "deepshield dataset stats: warning: real and fake faces come from different sources" in captured.err
    assert not DatasetLayout(shared).stats.exists()


def test_copies_of_several_files_count_as_one_reason(tmp_path: Path, small):
    # Each copy was a reason of its own, naming the file it repeats: a line each under ERRORS.
    real = faces(tmp_path / "src" / "real", small, 2)
    faces(tmp_path / "src" / "fake", small, 1, start=10)
    for name in ("000", "001"):
        shutil.copy(real / f"{name}.png", real / f"copy{name}.png")
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    assert len(read_errors(out)) == 2
    assert compute_stats(read_manifest(out), read_errors(out)).errors_by_reason == {"listed twice": 2}


def test_each_count_of_a_chart_is_written_above_its_own_bar(tmp_path: Path, monkeypatch):
    # Stacked, with each count in white inside its segment: 1 real face under 1,200 fakes was a segment under
    # a pixel high, its "1" white over the axis.
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    from deepshield.data.stats import DatasetStats, plot_stats

    drawn: dict[str, list[tuple[str, float, tuple]]] = {}
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        (ax,) = [a for a in figure.axes if a.texts]
        drawn[ax.get_title()] = [(t.get_text(), t.xy[1], to_rgb(t.get_color())) for t in ax.texts]
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    splits = {"train": {"real": 1, "fake": 1200}, "val": {"real": 1, "fake": 150}, "test": {"real": 0, "fake": 150}}
    by_label = {"real": 2, "fake": 1500}
    stats = DatasetStats(2, by_label, {"web": by_label}, {"none": by_label}, splits, 2, by_label, 2, {})
    plot_stats(stats, tmp_path)
    assert sorted(text for text, _, _ in drawn["Crops per split"]) == sorted(["1", "1", "0", "1200", "150", "150"])
    for text, top, colour in [entry for texts in drawn.values() for entry in texts]:
        assert top == int(text) and sum(colour) < 1.5  # at the top of its bar, dark on the white page


def test_a_charts_long_names_stay_on_the_picture(tmp_path: Path):
    # A CSV's source of 45 characters pushed the axes into a strip and its name ran off the picture's left edge.
    from deepshield.data.stats import DatasetStats, plot_stats

    counts = {"real": 1, "fake": 3}
    sources = {f"https://videos.example.org/channel/{i}/uploads-of-the-year": counts for i in range(2)}
    stats = DatasetStats(8, {"real": 2, "fake": 6}, sources, {"none": counts}, {"train": counts}, 2, counts, 2, {})
    for png in plot_stats(stats, tmp_path):
        image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert edges.min() > 200, png.name  # nothing drawn up to the picture's edge: nothing cut off by it
    sources_png = cv2.imread(str(tmp_path / "sources.png"))
    assert sources_png.shape[0] > 400  # the axes keep their height above the names (a strip under tight_layout)


def test_no_source_warning_when_sources_hold_both_labels(tmp_path: Path, small):
    faces(tmp_path / "mixed" / "real", small, 2)
    faces(tmp_path / "mixed" / "fake", small, 2, start=5)
    prepare_dataset([tmp_path / "mixed"], tmp_path / "ds", settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    stats = compute_stats(read_manifest(tmp_path / "ds"))
    assert not [w for w in stats.warnings if "sources" in w]


def test_stats_logged_to_mlflow(biased: Path, tmp_path: Path, monkeypatch, capsys, mlflow_store):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # artifacts land next to the store
    uri = f"sqlite:///{mlflow_store(tmp_path / 'mlruns.db')}"
    assert main(["dataset", "stats", str(biased), "--tracking-uri", uri, "--experiment", "stats-test"]) == 0
    printed = capsys.readouterr()
    assert "logged to MLflow run" in printed.out and "mlflow ui --backend-store-uri" in printed.out
    assert "INFO" not in printed.err  # a new store's "Creating initial MLflow database tables" is not shown
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("stats-test").experiment_id])
    assert run.data.metrics["crops_real"] == 3 and run.data.metrics["crops_fake"] == 5
    assert run.data.metrics["source.web.fake"] == 5
    assert "different sources" in run.data.tags["warnings"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "stats")}
    assert {"stats/labels.png", "stats/sources.png", "stats/methods.png", "stats/splits.png"} <= artifacts


def prepared_web(tmp_path: Path, small: np.ndarray, fakes: int) -> Path:
    """A dataset prepared from web/: 2 real faces and `fakes` fake ones, split half and half."""
    faces(tmp_path / "web" / "real", small, 2)
    faces(tmp_path / "web" / "fake", small, fakes, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "web"], out, settings=SETTINGS, ratios=(0.5, 0.5, 0.0), progress=False)
    return out


def test_balance_add_real_uses_the_dataset_crop_policy(tmp_path: Path, small, capsys):
    out = prepared_web(tmp_path, small, fakes=6)
    before = read_manifest(out)
    extra = faces(tmp_path / "more_reals", small, 4, start=30)
    summary = balance.add_real(out, extra, progress=False)
    assert summary.added == 4 and summary.after == {"real": 6, "fake": 6}
    records = read_manifest(out)
    assert records[: len(before)] == before  # existing rows (and their splits) untouched
    added = records[len(before) :]
    assert {r.label for r in added} == {"real"} and {r.source for r in added} == {"more_reals"}
    assert all(load_crop(r, out).shape == (64, 64, 3) for r in added)
    assert {r.split for r in added} <= {"train", "val"}
    # Adding the same folder again replaces its rows rather than duplicating them, and says it added none: it
    # said "4 crops added; before real 2" of a dataset holding those 4 before.
    assert main(["dataset", "balance", str(out), "--add-real", str(extra), "--no-progress"]) == 0
    assert "add-real: 0 crops added, 0 removed, 0 errors; before real 6, fake 6; after real 6, fake 6" in (
        capsys.readouterr().err
    )
    assert read_manifest(out) == records
    assert read_info(out).history == [f"add-real {extra.resolve()}"] * 2
    # A photo put in the folder since, and one taken out, are what it adds and removes.
    (extra / "030.png").unlink()
    faces(extra, small, 1, start=40)
    summary = balance.add_real(out, extra, progress=False)
    assert (summary.added, summary.removed, summary.before, summary.after) == (1, 1, *[{"real": 6, "fake": 6}] * 2)
    # One of each counted as one: it said "1 crops added", "1 errors", "1 files already in the dataset".
    assert summary.counts().startswith("add-real: 1 crop added, 1 removed, 0 errors;")
    one = balance.BalanceSummary("add-real", added=1, errors=1, already_held=1)
    assert one.counts().startswith("add-real: 1 crop added, 0 removed, 1 error, 1 file already in the dataset;")


def test_balance_add_real_takes_no_file_the_dataset_holds_and_keeps_earlier_splits(tmp_path: Path, small):
    out = prepared_web(tmp_path, small, fakes=2)
    before, before_info = read_manifest(out), read_info(out)
    # The dataset's own reals came in again as other groups (one photo in train and in val), its fakes as reals.
    summary = balance.add_real(out, tmp_path / "web" / "real", progress=False)
    assert summary.added == 0 and read_manifest(out) == before
    assert {e.reason for e in read_errors(out)} == {"already in the dataset (not added again)"}
    # Said as held, not as errors; and a step that added nothing does not stop the dataset's next prepare.
    assert (summary.errors, summary.already_held) == (0, 2) and "2 files already in the dataset" in summary.describe()
    assert read_info(out).history == [] and read_info(out).sources == before_info.sources
    # Files skipped, not files without a crop: stats counted them as errors.
    stats = compute_stats(read_manifest(out), read_errors(out))
    assert stats.errors_by_reason == {} and stats.already_held == len(read_errors(out)) > 0
    plain = tmp_path / "plain"  # the dataset's fakes kept in a folder that labels nothing
    shutil.copytree(tmp_path / "web" / "fake", plain)
    with pytest.raises(DeepShieldError, match=r"holds 2 of this dataset's fake files .* would add them as real"):
        balance.add_real(out, plain, progress=False)
    # Copies of its reals kept elsewhere came in as other groups (7 of 24 photos in two splits).
    copies = tmp_path / "copies"
    shutil.copytree(tmp_path / "web" / "real", copies)
    assert balance.add_real(out, copies, progress=False).added == 0 and read_manifest(out) == before
    # A folder added again with more photos: its earlier photos keep their splits (5 of 12 moved).
    extra = faces(tmp_path / "more", small, 12, start=30)
    balance.add_real(out, extra, progress=False)
    first = {r.group: r.split for r in read_manifest(out) if r.source == "more"}
    faces(extra, small, 3, start=60)
    balance.add_real(out, extra, progress=False)
    again = {r.group: r.split for r in read_manifest(out) if r.source == "more"}
    assert len(again) == 15 and {group: again[group] for group in first} == first


def test_add_real_refuses_a_folder_that_labels_files_fake(tmp_path: Path, small):
    # Every file was taken as real: a DFDC part's fakes, a fake/ folder's, came in as real faces.
    import json

    out = prepared_web(tmp_path, small, fakes=2)
    before = read_manifest(out)
    mixed = tmp_path / "mixed"
    faces(mixed / "real", small, 2, start=30)
    faces(mixed / "fake" / "swap", small, 1, start=40)
    dfdc = faces(tmp_path / "dfdc_part", small, 2, start=50)
    (dfdc / "metadata.json").write_text(json.dumps({"050.png": {"label": "REAL"}, "051.png": {"label": "FAKE"}}))
    # A FaceForensics++ method's videos: fake by the tree they lie in, which add-real did not look at.
    ffpp = tmp_path / "ffpp" / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
    ffpp.mkdir(parents=True)
    (ffpp / "000_003.mp4").write_bytes(b"a fake")
    # The method's mask videos: no faces at all, and read_ffpp lists none of them.
    masks = ffpp.parent.parent / "masks" / "videos"
    masks.mkdir(parents=True)
    (masks / "000_003.mp4").write_bytes(b"a mask")
    tried = (
        (mixed, mixed / "fake" / "swap" / "040.png"),
        (dfdc, dfdc / "051.png"),
        (ffpp, ffpp / "000_003.mp4"),
        (masks, masks / "000_003.mp4"),
    )
    for folder, fake in (*tried, (ffpp.parent.parent, ffpp / "000_003.mp4")):
        with pytest.raises(
            DeepShieldError, match=rf"{folder} labels files fake \(e.g. {fake}: .*would add them as real"
        ):
            balance.add_real(out, folder, progress=False)
        assert read_manifest(out) == before
    assert balance.add_real(out, mixed / "real", progress=False).added == 2  # a real/ folder is real faces


def test_add_real_reads_neither_the_datasets_own_crops_nor_one_photo_twice(tmp_path: Path, small):
    # The dataset inside the folder added: its crops, the fake ones too, came in as real faces.
    folder = faces(tmp_path / "folder", small, 2)
    faces(tmp_path / "src" / "real", small, 2, start=10)
    faces(tmp_path / "src" / "fake", small, 2, start=20)
    out = folder / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(0.5, 0.5, 0.0), progress=False)
    summary = balance.add_real(out, folder, progress=False)
    assert summary.added == 2 and {Path(r.source_file).parent for r in read_manifest(out) if r.source == "folder"} == {
        folder.resolve()
    }
    # One photo under several names (links): it came in as six groups, in train and in val.
    linked = faces(tmp_path / "linked", small, 1, start=40)
    for i in range(5):
        (linked / f"link{i}.png").symlink_to(linked / "040.png")
    (linked / "hard.png").hardlink_to(linked / "040.png")  # and a hard link: one photo, two groups
    os.mkfifo(linked / "pipe.png")  # a FIFO among them is named, never read (a read would block)
    (linked / "loop.png").symlink_to("loop.png")  # a link loop crashed the step (Path.resolve)
    summary = balance.add_real(out, linked, progress=False)
    added = [r for r in read_manifest(out) if r.source == "linked"]
    assert summary.added == len(added) == 1 and summary.errors == 8
    reasons = [e.reason.split(" (")[0] for e in read_errors(out) if "linked" in e.source_file]
    assert sorted(reasons) == ["listed twice"] * 6 + ["not a regular file: a FIFO", "symbolic link loop"]
    # Added again, adding nothing: its error rows are made again, not added to (they piled up each run).
    rows = read_errors(out)
    balance.add_real(out, tmp_path / "src" / "real", progress=False)
    balance.add_real(out, tmp_path / "src" / "real", progress=False)
    held = [e for e in read_errors(out) if e.reason == "already in the dataset (not added again)"]
    assert len(held) == 2 and len(read_errors(out)) == len(rows) + 2
    notes = tmp_path / "notes"  # no media at all: its one row, once
    notes.mkdir()
    (notes / "readme.txt").write_text("no photos here")
    for _ in range(3):
        balance.add_real(out, notes, progress=False)
    assert [e.reason for e in read_errors(out) if e.source_file == str(notes)] == ["no image or video files found"]


def crop_row(label: str, name: str, frame: int, split: str) -> CropRecord:
    """A manifest row of one face of `name`'s frame, labelled and split as given."""
    return CropRecord(
        f"crops/x/{name}/{frame:06d}_00.png", label, split, f"x:{name}", "x", "none" if label == "real" else "swap",
        f"/data/{name}", frame, 0, 0.9, (0, 0, 1, 1), tuple((0.0, 0.0) for _ in range(6)),
    )  # fmt: skip


def test_a_name_with_a_newline_forges_no_row_of_the_counts():
    # A method is the folder under fake/: "swap\nall  999" printed a line "all  999  0  1  1" under METHOD.
    from dataclasses import replace

    from deepshield.data.manifest import ErrorRecord
    from deepshield.data.stats import format_stats

    rows = [crop_row("real", "a", 0, "train"), replace(crop_row("fake", "b", 0, "train"), method="swap\nall  999")]
    text = format_stats(compute_stats(rows, [ErrorRecord("/data/c", "cannot read file\x1b[2J")]))
    assert "swap\\nall  999  " in text and "\nall  999" not in text and "\x1b" not in text
    assert len(text.splitlines()) == 19


def test_the_counts_first_line_counts_one_as_one():
    # It said "3 face crops from 2 files in 1 groups" of one video and a fake made from it.
    from dataclasses import replace

    from deepshield.data.manifest import ALREADY_HELD, ErrorRecord
    from deepshield.data.stats import format_stats

    one = [crop_row("real", "a", 0, "train"), crop_row("fake", "a", 1, "train"), crop_row("fake", "b", 0, "train")]
    one = [replace(row, group="x:a") for row in one]
    assert format_stats(compute_stats(one)).startswith("3 face crops from 2 files in 1 group\n")
    assert format_stats(compute_stats(one[:1])).startswith("1 face crop from 1 file in 1 group\n")
    held = [ErrorRecord("/data/a", ALREADY_HELD)]
    assert "\n1 file given to add-real was in the dataset already" in format_stats(compute_stats(one, held))


def test_balance_downsample_never_empties_a_label_nor_flips_the_imbalance(tmp_path: Path):
    # 1 real and 3 fake crops, two of them from one file: removing that file (twice the excess) left the
    # imbalance as large the other way, and, after the other file, no fake at all, by the seed.
    rows = [
        crop_row(label, name, frame, "val")
        for label, name, frame in (
            ("real", "r.mp4", 0),
            ("fake", "a.mp4", 0),
            ("fake", "b.mp4", 0),
            ("fake", "b.mp4", 1),
        )
    ]
    for seed in range(6):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        write_info(folder, DatasetInfo(seed=seed))
        write_manifest(folder / "manifest.csv", rows)
        after = balance.downsample(folder).after
        assert after["real"] == 1 and 1 <= after["fake"] <= 2, (seed, after)


def test_downsample_orders_many_files_at_once():
    # Every group was looked at for each file removed: 6,000 photos, each its own group, took 6 s (100,000: half
    # an hour); 20,000 took a minute.
    import random
    import time

    from deepshield.data.balance import _removal_order

    files = {f"g{i}": [f"g{i}/photo.png"] for i in range(20_000)}
    files["big"] = ["big/a.mp4", "big/b.mp4", "big/c.mp4"]
    start = time.monotonic()
    order = _removal_order(files, random.Random(0))
    assert time.monotonic() - start < 3
    assert set(order[:2]) < set(files["big"])  # from the group with the most files left first
    assert sorted(order) == sorted(f for group in files.values() for f in group)


def test_balance_downsample_removes_whole_files_per_split(tmp_path: Path, small):
    faces(tmp_path / "src" / "real", small, 3)
    faces(tmp_path / "src" / "fake", small, 8, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    summary = balance.downsample(out)
    assert summary.removed == 5 and summary.after == {"real": 3, "fake": 3}
    kept = read_manifest(out)
    removed = read_manifest_file(DatasetLayout(out).removed)
    assert Counter(r.label for r in removed) == {"fake": 5}
    assert {r.source_file for r in kept}.isdisjoint({r.source_file for r in removed})
    # Same seed, same choice.
    again = tmp_path / "again"
    prepare_dataset([tmp_path / "src"], again, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    balance.downsample(again)
    assert [r.crop_path for r in read_manifest(again)] == [r.crop_path for r in kept]


def test_balance_downsample_balances_each_split_on_its_own(tmp_path: Path, small):
    """Two splits, unbalanced differently: each ends with as many real as fake faces (one pass over the
    whole dataset balanced the totals only)."""
    faces(tmp_path / "src" / "real", small, 6)
    faces(tmp_path / "src" / "fake", small, 13, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(0.5, 0.5, 0.0), progress=False)
    before = Counter((r.split, r.label) for r in read_manifest(out))
    assert before["train", "real"] and before["val", "real"]
    assert before["train", "fake"] - before["train", "real"] != before["val", "fake"] - before["val", "real"]
    balance.downsample(out)
    after = Counter((r.split, r.label) for r in read_manifest(out))
    for split in ("train", "val"):
        assert after[split, "fake"] == after[split, "real"] == before[split, "real"], split


def test_balance_synth_fakes_keep_group_and_split(tmp_path: Path, small, capsys):
    faces(tmp_path / "src" / "real", small, 8)
    faces(tmp_path / "src" / "fake", small, 1, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(0.5, 0.5, 0.0), progress=False)
    reals = {r.crop_path: r for r in read_manifest(out) if r.label == "real"}
    train_groups = {r.group for r in reals.values() if r.split == "train"}
    assert len(train_groups) >= 3
    # An orphan of an interrupted run (written before its manifest) is swept.
    orphan = out / "crops" / "_synth" / "left.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"not listed")
    capsys.readouterr()
    assert main(["dataset", "balance", str(out), "--synth-fakes", "3", "--no-progress"]) == 0
    assert not orphan.exists()
    # The summary and its note each on a line of their own (the note followed a literal "\n").
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith("deepshield dataset balance: synth-fakes: 3 crops added") and "\\n" not in said[0]
    assert said[1] == "all added to the train split (val and test are left as they were)"
    # Its warnings as every command says them (they were 'WARNING: ...' here alone).
    assert said[2].startswith("deepshield dataset balance: warning: split val has no fake faces"), said
    records = read_manifest(out)
    synth = [r for r in records if r.method == "self_blend"]
    assert len(synth) == 3 and {r.label for r in synth} == {"fake"}
    assert len({r.group for r in synth}) == 3  # spread over different real faces
    # Made from the train split's reals only: fakes of our own recipe in val graded the model on them.
    assert {r.split for r in synth} == {"train"} and {r.group for r in synth} <= train_groups
    by_group = defaultdict(set)
    for record in records:
        by_group[record.group].add(record.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    for record in synth:
        (origin,) = [r for r in reals.values() if r.group == record.group]
        pixels = load_crop(record, out)
        assert pixels.shape == (64, 64, 3) and not np.array_equal(pixels, load_crop(origin, out))
    # Evaluated, each made fake is a fake file of its own (with its real, the file was judged real: 0 of 3 fakes)
    from deepshield.evaluation.scoring import PreparedCrops

    files: list = []
    evaluated = list(PreparedCrops(out, SETTINGS.policy, warn=lambda message: None).crop(files, progress=False))
    assert Counter(file.record.label for file in evaluated) == {0: 8, 1: 1 + 3}
    assert all(len(file.rows) == 1 for file in evaluated)
    made = [file.record.path for file in evaluated if file.record.path.endswith("(self-blended by dataset balance)")]
    assert len(made) == 3


def test_fakes_made_from_a_prepared_face_at_the_photos_edge_leave_its_padding_alone(tmp_path: Path, small):
    # A face cut by the photo's edge has black padding beside it in its crop. Its self-blends (balance
    # --synth-fakes, and training's from a prepared dataset) were made as if the crop were all photo: a
    # misaligned copy moved the padding's edge inside the blend (46 of 50 such fakes), a cue real photos lack.
    from deepshield.training.prepared import load_prepared

    for i in range(4):
        photo = np.ascontiguousarray(np.roll(small, 3 * i, axis=0)[:, 100 + 2 * i :])  # the face's left cut off
        (tmp_path / "src" / "real").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "src" / "real" / f"{i}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    reals = {r.group: r for r in read_manifest(out)}
    # Columns all black: the padding left of the photo.
    padding = {
        group: np.broadcast_to((load_crop(r, out) == 0).all(axis=(0, 2)), (64, 64)) for group, r in reals.items()
    }
    assert all(p[:, 0].all() and 0.1 < p.mean() < 0.5 for p in padding.values())
    balance.synth_fakes(out, 8, progress=False)
    fakes = [r for r in read_manifest(out) if r.label == "fake"]
    assert len(fakes) == 8
    for fake in fakes:
        near = cv2.dilate(padding[fake.group].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        real = load_crop(reals[fake.group], out)
        pixels = load_crop(fake, out)
        assert np.array_equal(pixels[near], real[near]) and not np.array_equal(pixels, real), fake.crop_path
    bank = load_prepared([out], SETTINGS.policy, "train").reals
    for valid, path in zip(bank.valid, bank.paths):
        outside = padding[next(g for g, r in reals.items() if path.endswith(r.crop_path))]
        assert not valid[outside].any() and valid[~outside].mean() > 0.95


def test_a_prepared_crops_keypoints_stay_on_their_pixels_when_it_is_resized_for_the_model():
    # A 64 px dataset's crops resized to a 224 px model moved their keypoints as x * ratio, where cv2.resize moves
    # pixel centres: each keypoint was 1.25 px off the landmark under it. A blob's centre is the landmark here; the
    # keypoint's offset from it in a crop cut at 224 px is what it must be in one resized from 64 px.
    from deepshield.faces.detector import Box
    from deepshield.training.prepared import _resized, _resized_points

    yy, xx = np.mgrid[0:400, 0:400]
    blob = np.exp(-((xx - 210.3) ** 2 + (yy - 190.7) ** 2) / (2 * 6.0**2))
    image = np.repeat((40 + 200 * blob)[..., None], 3, axis=2).round().astype(np.uint8)
    landmark = np.array([[210.8, 191.2]])  # the detector's edge coordinates: the pixel centre 210.3 is at 210.8
    box = Box(180.0, 160.0, 260.0, 240.0)  # no shrink before the warp at 64 px (zoom 0.53)

    def centre(pixels: np.ndarray) -> np.ndarray:
        weight = np.where(pixels[..., 0] >= 60, pixels[..., 0] - 40.0, 0.0)
        y, x = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
        return np.array([(weight * x).sum(), (weight * y).sum()]) / weight.sum()

    def keypoint_and_crop(size: int) -> tuple[np.ndarray, np.ndarray]:
        crop = crop_face(image, box, landmark, CropPolicy(size=size))
        return (landmark @ crop.matrix[:, :2].T + crop.matrix[:, 2])[0], crop.pixels

    point, pixels = keypoint_and_crop(224)
    small_point, small_pixels = keypoint_and_crop(64)
    resized = _resized_points(small_point, 224 / 64) - centre(_resized(small_pixels, 224))
    np.testing.assert_allclose(resized, point - centre(pixels), atol=0.1)


def test_balance_needs_a_prepared_dataset(tmp_path: Path, capsys):
    assert main(["dataset", "balance", str(tmp_path), "--downsample"]) == 2
    assert "run `deepshield prepare` first" in capsys.readouterr().err


def test_balance_refuses_an_option_its_step_does_not_use(biased: Path, tmp_path: Path, capsys):
    # Passed over without a word: --add-real --seed 7 split by the dataset's seed, --downsample --workers 4 ran alone.
    history = read_info(biased).history
    assert main(["dataset", "balance", str(biased), "--add-real", str(tmp_path), "--seed", "7"]) == 2
    assert (
        "--seed is for --downsample and --synth-fakes: --add-real splits the files it adds by the dataset's seed"
        in (capsys.readouterr().err)
    )
    for step in (["--downsample"], ["--synth-fakes", "3"]):
        assert main(["dataset", "balance", str(biased), *step, "--workers", "4"]) == 2
        assert "--workers is for --add-real" in capsys.readouterr().err
    assert read_info(biased).history == history


def test_balancing_a_dataset_that_cannot_be_written_in_is_refused_in_one_line(biased: Path, monkeypatch, capsys):
    # Another user's dataset (no write permission; chmod is no test here: root ignores it) ended in a traceback
    # (PermissionError at its lock).
    import errno
    import io

    from tests.conftest import _denied

    real_open, real_os_open = io.open, os.open

    def inside(file) -> bool:
        return isinstance(file, (str, os.PathLike)) and Path(os.path.abspath(file)).is_relative_to(biased.resolve())

    def guarded(file, mode="r", *args, **kwargs):
        if inside(file) and set(mode) & set("wax+"):
            raise _denied(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(file, flags, *args, **kwargs):
        if inside(file) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), file)
        return real_os_open(file, flags, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    monkeypatch.setattr("io.open", guarded)
    monkeypatch.setattr("os.open", os_open)
    assert main(["dataset", "balance", str(biased), "--downsample"]) == 2
    assert f"deepshield: error: DATASET_DIR {biased} cannot be written: Permission denied\n" in capsys.readouterr().err


def test_a_dataset_file_that_cannot_be_read_is_said_in_one_line(
    biased: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch, capsys
):
    # permission denied on manifest.csv or dataset.json was a PermissionError traceback
    layout = DatasetLayout(biased)
    evaluate = ["evaluate", str(biased), "--model", str(tiny_bundle), "--out", str(tmp_path / "report")]
    for denied, command in (
        (layout.manifest, ["dataset", "stats", str(biased)]),
        (layout.errors, ["dataset", "stats", str(biased)]),
        (layout.info, ["dataset", "balance", str(biased), "--downsample"]),
        (layout.info, [*evaluate, "--no-progress"]),
        (layout.manifest, [*evaluate, "--no-progress"]),
    ):
        with monkeypatch.context() as patched:
            deny_reading(patched, denied)
            assert main(command) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.endswith(f"{denied}: cannot be read (Permission denied)")
    for read in (read_manifest, read_info, read_errors):
        with monkeypatch.context() as patched:
            deny_reading(patched, layout.manifest, layout.info, layout.errors)
            with pytest.raises(ManifestError, match=r"cannot be read \(Permission denied\)"):
                read(biased)


def test_add_real_after_synth_fakes_and_downsample_adds_nothing_twice(tmp_path: Path, small):
    faces(tmp_path / "src" / "real", small, 6)
    faces(tmp_path / "src" / "fake", small, 2, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    extra = faces(tmp_path / "extra", small, 3, start=40)
    assert balance.add_real(out, extra, progress=False).added == 3
    balance.synth_fakes(out, 2, progress=False)
    # The fakes made from its reals keep their source files: the folder was "this dataset's fake files".
    assert balance.add_real(out, extra, progress=False).added == 0
    assert sum(r.source == "extra" for r in read_manifest(out)) == 3
    assert balance.downsample(out).removed == 5  # 9 reals (6 and 3 added) down to the 4 fakes (2 and 2 made)
    balance.synth_fakes(out, 1, progress=False)  # its sweep of unlisted crops keeps the down-sampled rows' crops
    assert all((out / row.crop_path).exists() for row in read_manifest_file(DatasetLayout(out).removed))
    # Down-sampled photos came back, in new splits, when added again.
    again = tmp_path / "again"
    again.mkdir()
    for row in read_manifest_file(DatasetLayout(out).removed):
        shutil.copy(row.source_file, again / Path(row.source_file).name)
    assert any(again.iterdir()) and balance.add_real(out, again, progress=False).added == 0


def test_a_dataset_of_one_class_or_no_crop_is_said_so_first():
    # One class gave no warning at all; no crop read "split train is empty (too few groups?)".
    from deepshield.data.stats import class_warnings

    assert class_warnings({"real": 0, "fake": 0}, has_errors=True) == [
        "no face crops: errors.csv says why for each file"
    ]
    assert class_warnings({"real": 5, "fake": 0}, has_errors=False)[0].startswith("the dataset has no fake faces")
    assert class_warnings({"real": 5, "fake": 2}, has_errors=False) == []


def test_a_balancing_step_killed_between_its_writes_is_undone_or_finished(tmp_path: Path, small, monkeypatch):
    # The manifest was written, then the history: a step killed between them was done twice on a rerun
    # (6 fakes for 3 asked; a downsample's rows twice in removed.csv), and a later prepare, no longer
    # refused, would have rebuilt the manifest without them.
    import types

    from deepshield.data import manifest as manifest_module

    faces(tmp_path / "src" / "real", small, 8)
    faces(tmp_path / "src" / "fake", small, 1, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # killed before its history is written: the step never happened
        patch.setattr(manifest_module, "write_info", killed)
        with pytest.raises(KeyboardInterrupt):
            balance.synth_fakes(out, 3, progress=False)
    assert read_info(out).history == [] and not any(r.method == "self_blend" for r in read_manifest(out))
    summary = balance.synth_fakes(out, 3, progress=False)
    assert summary.notes[0] == "note: undid an interrupted step: synth-fakes 3 seed=0"
    assert sum(r.method == "self_blend" for r in read_manifest(out)) == 3
    assert read_info(out).history == ["synth-fakes 3 seed=0"]

    with monkeypatch.context() as patch:  # killed once its history is written: the step is finished
        patch.setattr(manifest_module, "os", types.SimpleNamespace(replace=killed))
        with pytest.raises(KeyboardInterrupt):
            balance.downsample(out)
    assert len(read_info(out).history) == 2 and not DatasetLayout(out).removed.exists()
    with pytest.raises(ManifestError, match="was balanced after it was prepared"):
        prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, ratios=(1.0, 0.0, 0.0), progress=False)
    removed = read_manifest_file(DatasetLayout(out).removed)
    assert len(removed) == 4 and Counter(r.label for r in read_manifest(out)) == {"real": 4, "fake": 4}
    assert not list(out.glob("*.step")) and not (out / "step.json").exists()


def test_prepare_says_it_undid_an_interrupted_balancing_step(tmp_path: Path, small):
    import json

    faces(tmp_path / "src" / "real", small, 2)
    faces(tmp_path / "src" / "fake", small, 2, start=10)
    out = tmp_path / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, progress=False)
    (out / "manifest.csv.step").write_text("half a step")
    (out / "step.json").write_text(
        json.dumps({"entry": "synth-fakes 2 seed=0", "position": 0, "files": ["manifest.csv"]})
    )
    summary = prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, progress=False)
    assert summary.warnings()[0] == "undid an interrupted step: synth-fakes 2 seed=0"
    assert not (out / "manifest.csv.step").exists() and len(read_manifest(out)) == 4


def test_a_tracking_store_that_cannot_be_used_is_refused_before_the_charts(biased: Path, tmp_path: Path, capsys):
    dataset = tmp_path / "biased"
    shutil.copytree(biased, dataset, ignore=shutil.ignore_patterns("stats"))
    assert main(["dataset", "stats", str(dataset), "--tracking-uri", "garbage://x"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "the MLflow store garbage://x cannot be used" in captured.err
    assert captured.err.rstrip().endswith("or leave it out (nothing is logged to MLflow then)")
    assert captured.out == "" and not (dataset / "stats").exists()


def test_a_split_given_no_share_is_not_warned_of_as_empty(biased: Path, capsys):
    # Prepared with --split 1,0,0: stats and balance warned "split val is empty (too few groups for the
    # requested ratios?)" of the splits asked to be empty (prepare, rightly, did not).
    assert main(["dataset", "stats", str(biased)]) == 0
    assert "is empty" not in capsys.readouterr().err
    shares = {"real": 2, "fake": 2}
    from deepshield.data.stats import split_warnings

    empty = dict.fromkeys(("real", "fake"), 0)
    by_split = {"train": shares, "val": empty, "test": empty}
    assert split_warnings(by_split, shares, (1.0, 0.0, 0.0)) == []
    assert split_warnings(by_split, shares, (0.8, 0.1, 0.1))[0].startswith("split val is empty")


def test_a_split_warning_says_what_to_do():
    # "split test has no fake faces" and "(too few groups for the requested ratios?)" said nothing of a way out.
    from deepshield.data.stats import split_warnings

    shares = {"real": 3, "fake": 2}
    by_split = {"train": shares, "val": dict.fromkeys(("real", "fake"), 0), "test": {"real": 1, "fake": 0}}
    assert split_warnings(by_split, shares, (0.8, 0.1, 0.1)) == [
        "split val is empty: too few groups (people or videos) for the --split fractions; add data or change --split",
        "split test has no fake faces, which evaluate and calibrate need there: add fake files of more people or "
        "videos, or prepare again with another --split or --seed",
    ]


def test_downsample_says_why_a_split_is_left_unbalanced(tmp_path: Path):
    # 1 real face against 50 of one fake video: "0 crops removed ... after real 1, fake 50", and no word why.
    write_info(tmp_path, DatasetInfo())
    write_manifest(
        tmp_path / "manifest.csv",
        [crop_row("real", "r.mp4", 0, "train"), *(crop_row("fake", "v.mp4", i, "train") for i in range(50))],
    )
    summary = balance.downsample(tmp_path)
    assert summary.removed == 0 and summary.after == {"real": 1, "fake": 50}
    assert any(note.startswith("split train: 1 real against 50 fake faces left") for note in summary.notes)
    assert "add real faces instead" in summary.describe()


@pytest.mark.parametrize(("fakes", "entry"), [(3, "1 crop removed"), (4, "2 crops removed")])
def test_downsample_history_says_its_count(tmp_path: Path, fakes: int, entry: str):
    # dataset.json's history said "downsample seed=0: 1 crops removed"; entries written before stay as they were.
    write_info(tmp_path, DatasetInfo(history=["downsample seed=0: 1 crops removed"]))
    reals = [crop_row("real", f"r{i}.mp4", 0, "train") for i in range(2)]
    write_manifest(
        tmp_path / "manifest.csv", [*reals, *(crop_row("fake", f"v{i}.mp4", 0, "train") for i in range(fakes))]
    )
    balance.downsample(tmp_path)
    assert read_info(tmp_path).history == ["downsample seed=0: 1 crops removed", f"downsample seed=0: {entry}"]


def test_downsample_advises_adding_faces_only_to_a_split_still_unbalanced(tmp_path: Path):
    # 6 real against 7 fake faces (fakes of 2 or 3 faces a video: none can go) were told "add real faces instead".
    write_info(tmp_path, DatasetInfo())
    reals = [crop_row("real", f"r{i}.mp4", 0, "train") for i in range(6)]
    fakes = [crop_row("fake", f"v{video}.mp4", i, "train") for i, video in enumerate((0, 0, 1, 1, 2, 2, 2))]
    write_manifest(tmp_path / "manifest.csv", [*reals, *fakes])
    summary = balance.downsample(tmp_path)
    assert summary.after == {"real": 6, "fake": 7} and summary.notes, summary.describe()
    assert "instead" not in summary.describe()


def test_balance_ends_with_the_warnings_dataset_stats_gives(tmp_path: Path, capsys):
    # Computed without errors.csv, balance said "no face crops" where stats says errors.csv says why.
    from deepshield.data.manifest import ErrorRecord, write_errors

    write_info(tmp_path, DatasetInfo())
    write_manifest(tmp_path / "manifest.csv", [])
    write_errors(DatasetLayout(tmp_path).errors, [ErrorRecord("/data/a.png", "no face found")])
    assert main(["dataset", "balance", str(tmp_path), "--downsample"]) == 0
    said = capsys.readouterr().err
    assert "deepshield dataset balance: warning: no face crops: errors.csv says why for each file" in said, said
