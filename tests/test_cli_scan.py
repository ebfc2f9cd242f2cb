"""`deepshield scan`, in process through deepshield.cli.main.main and once as the console script."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import html
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepshield.cli.main import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main
from deepshield.cli.scan import SUMMARY_FIELDS
from deepshield.errors import EXIT_INTERRUPTED, EXIT_READER_GONE
from deepshield.inference.results import SCOPE_WITH_SYNTHETIC
from tests.conftest import (
    NATIVE_LOG_LINE,
    bundle_with_record,
    deny_listing,
    file_size_limit,
    photo_with_exif,
    write_video,
)
from tests.provenance_support import signing_identity, with_credentials


def overlay_of(path: Path, bundle: Path) -> np.ndarray:
    """The heatmap overlay of a photo's one face, as the Python API makes it."""
    from deepshield.inference.analysis import Detector
    from deepshield.inference.heatmap import overlay

    (face,) = Detector.from_bundle(bundle).analyze_image(path).faces
    return overlay(face.crop, face.heatmap)


def save_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory, astronaut) -> Path:
    """photos/: a face (JPEG), no face (PNG), a face video, a notes file; photos/more/: one face."""
    root = tmp_path_factory.mktemp("media") / "photos"
    (root / "more").mkdir(parents=True)
    save_image(root / "astronaut.jpg", astronaut)
    save_image(root / "blank.png", np.full((200, 300, 3), 128, np.uint8))
    write_video(root / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    (root / "notes.txt").write_text("not media: a folder scan skips it by its suffix\n")
    save_image(root / "more" / "flipped.png", np.ascontiguousarray(astronaut[:, ::-1]))
    return root


def scan(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["scan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_folder_of_images_and_videos_as_json(capsys, media, tiny_bundle):
    code, out, _ = scan(capsys, str(media), "--model", str(tiny_bundle), "--format", "json", "--frames", "4")
    assert code == EXIT_OK
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["astronaut.jpg", "blank.png", "clip.mp4"]  # sorted, no notes.txt
    photo, blank, clip = rows
    assert photo["status"] == "ok" and photo["kind"] == "image" and photo["faces"] == 1
    assert (
        photo["verdict"] in ("likely_manipulated", "inconclusive", "no_signs_found") and 0 <= photo["probability"] <= 1
    )
    assert photo["result"]["scope"].startswith("Deepfake Shield judges face swaps and face edits only")
    assert photo["probability"] == photo["result"]["verdict"]["probability"]
    assert len(photo["result"]["faces"]) == 1 and photo["result"]["model"] == "tiny-test 0.0.1"
    assert blank["verdict"] == "no_face" and blank["faces"] == 0 and "probability" not in blank
    assert clip["kind"] == "video" and clip["faces"] == 1  # one face track
    assert clip["result"]["sampled_frames"] == 4 and len(clip["result"]["timeline"]) == 4
    assert all("error" not in r for r in rows)
    # A result keeps its empty fields, as the Python API and the REST API give it (they were left out).
    assert clip["result"]["analysed"]["part"] is None and photo["result"]["metadata"]["camera"] is None
    assert all(p["timestamp_s"] * 1000 == round(p["timestamp_s"] * 1000) for p in clip["result"]["timeline"])


def test_recursive_descends_into_subfolders(capsys, media, tiny_bundle):
    code, out, _ = scan(capsys, str(media), "-r", "--model", str(tiny_bundle), "--format", "jsonl", "--frames", "2")
    assert code == EXIT_OK
    rows = [json.loads(line) for line in out.splitlines()]
    names = [Path(r["path"]).relative_to(media).as_posix() for r in rows]
    assert names == ["astronaut.jpg", "blank.png", "clip.mp4", "more/flipped.png"]
    flipped = rows[-1]
    assert flipped["faces"] == 1
    box = flipped["result"]["faces"][0]["box"]
    assert 230 < box[0] < 260  # the mirrored face sits at x 239-334


def test_csv_has_the_summary_fields(capsys, media, tiny_bundle):
    code, out, _ = scan(
        capsys, str(media / "astronaut.jpg"), str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv"
    )
    assert code == EXIT_OK
    reader = csv.DictReader(io.StringIO(out))
    assert tuple(reader.fieldnames) == SUMMARY_FIELDS
    rows = list(reader)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["kind"] == "image" and rows[0]["faces"] == "1" and 0 <= float(rows[0]["probability"]) <= 1
    assert rows[1]["verdict"] == "no_face" and rows[1]["probability"] == "" and rows[1]["error"] == ""
    assert float(rows[0]["elapsed_ms"]) > 0
    assert rows[0]["sha256"] == hashlib.sha256((media / "astronaut.jpg").read_bytes()).hexdigest()
    assert rows[1]["sha256"] == hashlib.sha256((media / "blank.png").read_bytes()).hexdigest() != rows[0]["sha256"]


def test_a_csv_row_says_why_its_file_got_no_face_as_json_does(capsys, media, tiny_bundle):
    files = (str(media / "astronaut.jpg"), str(media / "blank.png"))
    _, out, _ = scan(capsys, *files, "--model", str(tiny_bundle), "--format", "csv")
    face, faceless = csv.DictReader(io.StringIO(out))
    _, out, _ = scan(capsys, *files, "--model", str(tiny_bundle), "--format", "json")
    reasons = [row["result"]["verdict"]["reason"] for row in json.loads(out)]
    assert [face["reason"], faceless["reason"]] == reasons
    assert faceless["verdict"] == "no_face" and "faces narrower than about 100 px" in faceless["reason"]


def test_resume_goes_on_in_a_csv_written_before_the_reason_column(capsys, media, tiny_bundle, tmp_path):
    from deepshield.cli.scan import EARLIER_CSV_FIELDS

    out = tmp_path / "older.csv"
    code, _, _ = scan(
        capsys, str(media / "astronaut.jpg"), "--model", str(tiny_bundle), "--format", "csv", "--out", str(out)
    )
    older = io.StringIO(newline="")
    writer = csv.DictWriter(older, fieldnames=EARLIER_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    out.write_text(older.getvalue(), newline="")
    files = (str(media / "astronaut.jpg"), str(media / "blank.png"))
    code, _, err = scan(capsys, *files, "--model", str(tiny_bundle), "--format", "csv", "--out", str(out), "--resume")
    assert code == EXIT_OK, err
    assert "1 file already in" in err
    reader = csv.reader(io.StringIO(out.read_text(), newline=""))
    header, *rows = list(reader)
    assert tuple(header) == EARLIER_CSV_FIELDS and all(len(row) == len(header) for row in rows)  # still one table
    assert [Path(row[0]).name for row in rows] == ["astronaut.jpg", "blank.png"]


def test_table_is_the_default(capsys, media, tiny_bundle):
    code, out, _ = scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle))
    assert code == EXIT_OK
    header, line, blank, meaning, scope = out.splitlines()
    assert header.split() == [
        "FILE", "KIND", "VERDICT", "CAUTION", "P(SWAP)", "P(SYNTH)", "DRIVER", "FACES", "DECLARED", "MS", "ERROR"
    ]  # fmt: skip
    assert line.split()[1:9] == ["image", "no_face", "-", "-", "-", "-", "0", "-"]
    assert blank == "" and meaning.startswith(
        "no_signs_found does not prove a file authentic (the model misses many face edits and many newer face swaps)"
    )
    assert meaning.endswith(
        "no_face: no face was found, so nothing was checked: the CSV's reason column and --format json say where "
        "none was found and why faces go unfound."
    )
    assert "not detect fully AI-generated faces, lip-sync without blending, or manipulated audio" in scope
    # A model without the synthetic-face score: no score drives a verdict but the one it has, so DRIVER is "-".
    code, out, _ = scan(capsys, str(media / "astronaut.jpg"), "--model", str(tiny_bundle))
    lines = out.splitlines()
    columns = lines[0].index("CAUTION"), lines[0].index("P(SWAP)")
    face_line = lines[1][columns[1] :].split()
    assert lines[1].split()[1] == "image" and face_line[1:3] == ["-", "-"] and face_line[3] == "1"
    # The face's caution is named in its own column (a "!" after the verdict said not which) and under the table.
    assert lines[1][columns[0] : columns[1]].strip() == "small face"
    assert any(line.startswith("CAUTION: take care with that file's score") for line in lines)
    assert "inconclusive: the score behind it lies in its uncertain band (face-swap score 40.0% to 60.0%)" in out


def test_out_writes_a_file_and_nothing_to_stdout(capsys, media, tiny_bundle, tmp_path):
    target = tmp_path / "reports" / "scan.json"
    code, out, _ = scan(
        capsys, str(media / "astronaut.jpg"), "--model", str(tiny_bundle), "--format", "json", "--out", str(target)
    )
    assert code == EXIT_OK and out == ""
    assert json.loads(target.read_text())[0]["faces"] == 1


def test_heatmaps_are_written_as_pngs_without_name_clashes(capsys, media, tiny_bundle, tmp_path, astronaut):
    folder = tmp_path / "in"
    folder.mkdir()
    save_image(folder / "a.jpg", astronaut)
    save_image(folder / "a.png", np.concatenate([astronaut, astronaut], axis=1))  # same stem, two faces
    # A-2: a stem a second copy of "a" took as its own, when the file a-2.jpg's heatmaps went by a third name
    save_image(folder / "A-2.jpg", astronaut[:, ::-1])
    save_image(folder / "A.jpg", astronaut)  # A_face0.png is a_face0.png where case is not told apart
    shutil.copy(media / "clip.mp4", folder / "clip.mp4")  # a video: one heatmap per face track
    out_dir = tmp_path / "heat"
    code, _, _ = scan(
        capsys,
        str(folder),
        "--model",
        str(tiny_bundle),
        "--heatmaps",
        str(out_dir),
        "--format",
        "json",
        "--frames",
        "2",
    )
    assert code == EXIT_OK
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "A-2_face0.png",
        "A_face0.png",
        "a_face0-2.png",
        "a_face0-3.png",
        "a_face1-3.png",
        "clip_track0.png",
    ]
    flipped = overlay_of(folder / "A-2.jpg", tiny_bundle)  # each file's own face under its own name
    assert np.array_equal(cv2.imread(str(out_dir / "A-2_face0.png"))[..., ::-1], flipped)
    for png in out_dir.iterdir():
        image = cv2.imread(str(png))
        assert image.shape == (64, 64, 3)  # the crop, at the bundle's input size, with the overlay
        assert image.std() > 5


def test_a_bad_file_is_an_error_row_and_the_scan_goes_on(capsys, media, tiny_bundle, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((media / "astronaut.jpg").read_bytes()[:3000])
    text = tmp_path / "fake.png"
    text.write_text("hello")
    code, out, _ = scan(
        capsys,
        str(broken),
        str(media / "astronaut.jpg"),
        str(text),
        str(tmp_path / "missing.jpg"),
        "--model",
        str(tiny_bundle),
        "--format",
        "json",
    )
    assert code == EXIT_SOME_FAILED
    rows = json.loads(out)
    assert [r["status"] for r in rows] == ["error", "ok", "error", "error"]
    assert "corrupt or truncated image" in rows[0]["error"]
    assert rows[1]["faces"] == 1
    assert "unsupported file type" in rows[2]["error"]
    assert rows[3]["error"] == "no such file"
    assert all("verdict" not in r for r in rows if r["status"] == "error")
    # a file that could be read is named by its bytes even when it could not be analysed
    assert rows[0]["sha256"] == hashlib.sha256(broken.read_bytes()).hexdigest()
    assert rows[2]["sha256"] == hashlib.sha256(b"hello").hexdigest() and "sha256" not in rows[3]


def test_a_folder_that_cannot_be_read_is_a_row_of_its_own(capsys, tiny_bundle, tmp_path, monkeypatch):
    # Its files were left out without a word (a recursive scan), or the scan ended in a traceback (the
    # folder named). Permission is refused by patching: the tests may run as root, whom chmod does not stop.
    root = tmp_path / "tree"
    save_image(root / "a.png", np.full((64, 64, 3), 128, np.uint8))
    locked = root / "locked"
    save_image(locked / "b.png", np.full((64, 64, 3), 128, np.uint8))

    deny_listing(monkeypatch, locked)
    said = "a folder that cannot be read (Permission denied): its files were left out"
    for named in (["-r", str(root)], [str(locked)]):
        code, out, _ = scan(capsys, *named, "--model", str(tiny_bundle), "--format", "json")
        rows = {Path(row["path"]).name: row for row in json.loads(out)}
        assert code == EXIT_SOME_FAILED, named
        assert rows["locked"]["status"] == "error" and rows["locked"]["error"] == said
        assert set(rows) == ({"a.png", "locked"} if "-r" in named else {"locked"})


def test_outputs_never_take_an_input_files_place(capsys, tiny_bundle, tmp_path):
    folder = tmp_path / "photos"
    for name in ("a.png", "b.png"):
        save_image(folder / name, np.full((64, 64, 3), 128, np.uint8))
    photo = (folder / "a.png").read_bytes()
    for flag, extra in (("--out", ["--format", "csv"]), ("--html", [])):
        code, _, err = scan(capsys, str(folder), "--model", str(tiny_bundle), *extra, flag, str(folder / "a.png"))
        # The photo was scanned, then its rows (or the page) written over it.
        assert code == EXIT_USAGE and f"{flag} {folder / 'a.png'} is one of the files to scan" in err, err
        assert (folder / "a.png").read_bytes() == photo
    # A dangling link as --out is written through, as a shell's redirection would: the check's trial file
    # took the link's place, and an empty file was left where it pointed.
    (tmp_path / "rows.csv").symlink_to(tmp_path / "elsewhere.csv")
    code, _, _ = scan(
        capsys, str(folder), "--model", str(tiny_bundle), "--format", "csv", "--out", str(tmp_path / "rows.csv")
    )
    assert code == EXIT_OK and (tmp_path / "rows.csv").is_symlink()
    assert len((tmp_path / "elsewhere.csv").read_text().splitlines()) == 3


def test_names_a_spreadsheet_would_run_are_written_as_text_and_read_back_as_they_were(
    capsys, tiny_bundle, tmp_path, monkeypatch
):
    # A spreadsheet opening the rows ran "=HYPERLINK(...).png" as a formula; the page's list already wrote it
    # after a quote.
    names = ["=HYPERLINK(x).png", "-x.png", "'quoted.png", "@SUM(A1).png", "plain.png"]
    for name in names:
        save_image(tmp_path / "photos" / name, np.full((64, 64, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path / "photos")
    out = tmp_path / "rows.csv"
    assert scan(capsys, ".", "--model", str(tiny_bundle), "--format", "csv", "--out", str(out))[0] == EXIT_OK
    cells = sorted(row["path"] for row in csv.DictReader(out.open(newline="")))
    assert cells == ["''quoted.png", "'-x.png", "'=HYPERLINK(x).png", "'@SUM(A1).png", "plain.png"]
    # --resume reads each name back as it is: none is scanned again.
    code, _, err = scan(capsys, ".", "--model", str(tiny_bundle), "--format", "csv", "--out", str(out), "--resume")
    assert code == EXIT_OK and "5 files already in" in err and ", 0 to scan" in err, err
    assert len(out.read_text().splitlines()) == 6


def test_long_file_names_neither_end_the_scan_nor_empty_its_output(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    # A 250-byte name is a file system's own; "<stem>_face0.png" beside it was not, and the scan ended.
    long = tmp_path / ("L" * 246 + ".jpg")
    shutil.copy(media / "astronaut.jpg", long)
    heatmaps = tmp_path / "heatmaps"
    code, _, _ = scan(capsys, str(long), "--model", str(tiny_bundle), "--format", "csv", "--heatmaps", str(heatmaps))
    (written,) = heatmaps.iterdir()
    assert code == EXIT_OK and written.name.startswith("L" * 200) and written.name.endswith("_face0.png")
    assert len(written.name) == 255 and "~" in written.name
    # A heatmap that cannot be written (a full disk) is said; the rows go on.
    import deepshield.cli.scan as scan_cli

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scan_cli, "write_heatmaps", full_disk)
    code, out, err = scan(
        capsys, str(long), "--model", str(tiny_bundle), "--format", "csv", "--heatmaps", str(heatmaps)
    )
    assert code == EXIT_OK and len(out.splitlines()) == 2
    assert "were not written: No space left on device" in err
    # An --out whose settings file's name is too long: refused before the rows it held were emptied.
    out_file = tmp_path / ("R" * 245 + ".csv")
    out_file.write_text("keep\n")
    code, _, err = scan(
        capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv", "--out", str(out_file)
    )
    assert code == EXIT_USAGE and f"--out {out_file}: the scan's settings cannot be written beside it" in err, err
    assert out_file.read_text() == "keep\n"


def test_no_media_found_is_said_and_is_not_a_failure(capsys, tmp_path, tiny_bundle):
    # A listing of new files is empty on a quiet day: a cron job's scan of it has not failed.
    (tmp_path / "readme.txt").write_text("nothing to scan")
    code, out, err = scan(capsys, str(tmp_path), "--model", str(tiny_bundle))
    assert code == EXIT_OK and "no media files found, nothing to scan" in err and out == ""
    (tmp_path / "empty-list.txt").write_text("")
    code, _, err = scan(capsys, "--files-from", str(tmp_path / "empty-list.txt"), "--model", str(tiny_bundle))
    assert code == EXIT_OK and "nothing to scan" in err
    # Its --out holds no rows, in its format's way: the rows another day's scan left there stood for this one
    # (and JSON on standard output was no JSON).
    listing = ("--files-from", str(tmp_path / "empty-list.txt"), "--model", str(tiny_bundle))
    for fmt, empty in (("csv", ",".join(SUMMARY_FIELDS) + "\r\n"), ("jsonl", ""), ("json", "[]\n")):
        rows = tmp_path / f"new.{fmt}"
        rows.write_text("yesterday's rows\n")
        assert scan(capsys, *listing, "--format", fmt, "--out", str(rows))[0] == EXIT_OK
        assert rows.read_bytes() == empty.encode()
        if fmt != "jsonl":
            assert scan(capsys, *listing, "--format", fmt)[1] == empty


def test_outputs_that_cannot_be_written_are_refused_before_the_scan(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    from deepshield.inference.scan import ScanJob

    monkeypatch.setattr(ScanJob, "__call__", lambda self, path: pytest.fail("scanned before the outputs were checked"))
    kept = tmp_path / "kept.csv"
    kept.write_text("earlier rows\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for flag, target, message in [
        ("--out", folder, f"--out {folder} is a folder: name a file"),
        ("--html", folder, f"--html {folder} is a folder: name a file"),
        ("--heatmaps", kept, f"--heatmaps {kept} is a file: name a folder"),
        ("--out", kept / "rows.json", f"--out {kept / 'rows.json'} cannot be written"),
    ]:
        code, out, err = scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle), flag, str(target))
        assert code == EXIT_USAGE and message in err and out == "", err
    assert kept.read_text() == "earlier rows\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a-folder",
        "kept.csv",
    ]


def test_the_table_says_what_the_model_judges_even_when_no_file_was_analysed(capsys, tmp_path, tiny_bundle):
    from tests.test_synthetic_score import export_two_output_bundle

    _, two_output = export_two_output_bundle(tmp_path / "two")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    code, out, _ = scan(capsys, str(broken), "--model", str(two_output))
    assert code == EXIT_SOME_FAILED
    assert out.rstrip().splitlines()[-1] == SCOPE_WITH_SYNTHETIC
    html = tmp_path / "page.html"
    scan(capsys, str(broken), "--model", str(two_output), "--html", str(html))
    assert SCOPE_WITH_SYNTHETIC in html.read_text().replace("&#x27;", "'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames: must be a positive integer"),
        (["--frames", "129"], "--frames: must be at most 128"),  # the API's bound (ServerSettings.max_video_frames)
        (["--frames", "two"], "--frames"),
        (["--threshold", "1.5"], "--threshold: must be between 0 and 1"),
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--start", "1:75"], "--start: '1:75' is not a time: minutes and seconds after a colon are below 60"),
        (["--end", "-3"], "--end: '-3' is not a time: write seconds (95), m:ss (1:35) or h:mm:ss (0:01:35)"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--watch", "0"], "--watch: must be from 0.1 to 86400 seconds"),
        (["--watch", "nan"], "--watch: must be from 0.1 to 86400 seconds"),
    ],
)
def test_usage_errors_exit_2(capsys, media, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(media / "blank.png"), *args])
    assert exit_info.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_span_of_every_video_is_scanned(capsys, media, tiny_bundle):
    # The clip: 6 frames at 10 fps. --start and --end take seconds or m:ss; photos are unaffected.
    code, out, _ = scan(
        capsys, str(media), "--model", str(tiny_bundle), "--format", "json", "--start", "0:00.2", "--end", "0.45"
    )
    assert code == EXIT_OK
    rows = {Path(r["path"]).name: r for r in json.loads(out)}
    clip = rows["clip.mp4"]["result"]
    assert clip["analysed"] == {"start_s": 0.2, "end_s": 0.45, "whole": False, "part": "0:00.2 to 0:00.5"}  # to a tenth
    assert [p["frame_index"] for p in clip["timeline"]] == [2, 3, 4]
    assert rows["clip.mp4"]["part"] == "0:00.2 to 0:00.5"  # tenths, as clock_time writes them
    assert rows["astronaut.jpg"]["faces"] == 1 and "part" not in rows["astronaut.jpg"]
    code, out, _ = scan(
        capsys, str(media / "clip.mp4"), "--model", str(tiny_bundle), "--format", "json", "--start", "9"
    )
    assert code == EXIT_SOME_FAILED
    assert json.loads(out)[0]["error"] == "the video is 0.6 s long: nothing to analyse from 9 s on"
    code, _, err = scan(capsys, str(media / "clip.mp4"), "--model", str(tiny_bundle), "--start", "0:02", "--end", "1")
    assert code == EXIT_USAGE and "a video span must end after it starts: 1 s is not after 2 s" in err


def test_bad_model_is_a_usage_error(capsys, media, tmp_path):
    code, out, err = scan(capsys, str(media / "blank.png"), "--model", str(tmp_path / "no-model"))
    assert code == EXIT_USAGE
    assert "deepshield: error: model bundle" in err and "does not exist" in err and out == ""


def test_a_corrupt_bundle_is_refused_before_out_is_emptied(capsys, media, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    graph = bundle / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"x")
    out = tmp_path / "rows.csv"
    out.write_text("yesterday's rows\n")
    code, _, err = scan(capsys, str(media / "blank.png"), "--model", str(bundle), "--format", "csv", "--out", str(out))
    assert code == EXIT_USAGE and "does not match the checksum in its model card" in err
    assert out.read_text() == "yesterday's rows\n"


def test_model_refuses_a_bundle_whose_graph_was_replaced(capsys, tiny_bundle, tmp_path):
    from deepshield.cli.main import main

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"x")
    assert main(["model", "--model", str(bundle)]) == EXIT_USAGE
    assert "does not match the checksum in its model card" in capsys.readouterr().err


def test_console_script_runs(media, tiny_bundle, tmp_path):
    script = Path(sys.executable).with_name("deepshield")
    command = [str(script)] if script.exists() else [shutil.which("deepshield") or "deepshield"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [
            *command,
            "scan",
            str(media / "astronaut.jpg"),
            str(tmp_path / "gone.png"),
            "--model",
            str(tiny_bundle),
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == EXIT_SOME_FAILED, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "error"] and rows[0]["faces"] == 1
    usage = subprocess.run(
        [*command, "scan", "x.jpg", "--frames", "0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert usage.returncode == EXIT_USAGE and "must be a positive integer" in usage.stderr


# --- results as files finish, resume, special files ------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_rows_are_written_as_files_finish_and_resume_skips_them(capsys, media, tiny_bundle, tmp_path, monkeypatch, fmt):
    import deepshield.inference.scan as scan_module

    out = tmp_path / f"results.{fmt}"
    files = [str(media / name) for name in ("astronaut.jpg", "blank.png", "clip.mp4")]
    real_scan_file = scan_module.scan_file
    scanned = []

    def killed_on_the_third(detector, path, *args, **kwargs):
        scanned.append(path.name)
        if len(scanned) == 3:
            raise KeyboardInterrupt  # as a kill mid-scan
        return real_scan_file(detector, path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "scan_file", killed_on_the_third)
    code, _, _ = scan(capsys, *files, "--model", str(tiny_bundle), "--format", fmt, "--out", str(out))
    assert code == EXIT_INTERRUPTED

    def paths_in_out() -> list[str]:
        text = out.read_text()
        if fmt == "jsonl":
            return [json.loads(line)["path"] for line in text.splitlines()]
        return [row["path"] for row in csv.DictReader(io.StringIO(text))]

    assert paths_in_out() == files[:2]  # the two finished files were written before the kill
    with open(out, "a") as handle:
        handle.write('{"path": "cut short' if fmt == "jsonl" else "cut,sho")  # a write the kill interrupted
    scanned.clear()
    code, _, err = scan(capsys, *files, "--model", str(tiny_bundle), "--format", fmt, "--out", str(out), "--resume")
    assert code == EXIT_OK, err
    assert scanned == ["clip.mp4"] and "2 files already in" in err
    assert paths_in_out() == files


def test_a_full_disk_stops_a_scan_in_one_line_naming_its_out_and_a_resume_goes_on(capsys, media, tiny_bundle, tmp_path):
    # The row a full disk cut short was written again as --out closed, failing again: its error, naming no
    # file, took the place of the first ("deepshield: error: No space left on device"; a traceback before that).
    out = tmp_path / "rows.jsonl"
    args = (str(media / "astronaut.jpg"), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out))
    with file_size_limit(len(str(tmp_path)) + 400):  # the settings beside it fit, a row does not
        code, _, err = scan(capsys, *args)
    assert code == EXIT_USAGE
    assert err == (
        f"deepshield: error: cannot write --out {out} (File too large): the rows written are kept, and a scan with "
        "--resume goes on from them\n"
    )
    code, _, err = scan(capsys, *args, "--resume")
    assert code == EXIT_OK, err
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == [args[0]]


def test_json_rows_that_cannot_be_written_leave_the_out_before_as_it_was(capsys, media, tiny_bundle, tmp_path):
    # Written in place, a full disk left results.json cut short: no JSON, and the rows it held before lost.
    out = tmp_path / "results.json"
    out.write_text('["the rows before"]\n')
    with file_size_limit(2048):
        code, stdout, err = scan(
            capsys, str(media / "astronaut.jpg"), "--model", str(tiny_bundle), "--format", "json", "--out", str(out)
        )
    assert code == EXIT_USAGE and "the rows went to standard output" in err and "(File too large)" in err
    assert out.read_text() == '["the rows before"]\n' and os.listdir(tmp_path) == ["results.json"]
    assert json.loads(stdout)[0]["path"].endswith("astronaut.jpg")


def test_json_rows_go_to_an_out_that_may_be_written_in_a_folder_that_may_not(
    capsys, media, tiny_bundle, tmp_path, monkeypatch
):
    # Written whole through a temporary file beside it, a results.json the user may write in a folder they may
    # not (a shared folder) was refused at the scan's end: exit 2, its rows on standard output only.
    import deepshield.data.layout as layout

    def refused(path: Path, *args, **kwargs) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(layout, "atomic_write_text", refused)  # as the folder refuses its temporary file
    out = tmp_path / "results.json"
    out.write_text("[]\n")
    code, stdout, err = scan(
        capsys, str(media / "astronaut.jpg"), "--model", str(tiny_bundle), "--format", "json", "--out", str(out)
    )
    assert code == EXIT_OK, err
    assert json.loads(out.read_text())[0]["path"].endswith("astronaut.jpg") and stdout == ""


def test_a_page_that_cannot_be_written_is_one_line_naming_it_and_the_page_before_is_kept(
    capsys, media, tiny_bundle, tmp_path
):
    # The page's own write-then-rename said "deepshield: error: File too large" (a full disk: "No space left on
    # device"), naming no file.
    page = tmp_path / "scan.html"
    page.write_text("the page before")
    with file_size_limit(2048):
        code, _, err = scan(
            capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "json", "--html", str(page)
        )
    assert code == EXIT_USAGE and err.splitlines()[-1] == f"deepshield: error: {page}: File too large"
    assert page.read_text() == "the page before" and os.listdir(tmp_path) == ["scan.html"]


def test_a_second_scan_into_the_out_being_written_is_refused_naming_the_first(
    capsys, media, tiny_bundle, tmp_path, monkeypatch
):
    # Run twice (two terminals, a cron job that overlapped): the second scan wrote over the first's rows, or,
    # resumed, read none of them yet and scanned every file again, each one's row in the file twice.
    import deepshield.inference.scan as scan_module

    out = tmp_path / "rows.csv"
    files = [str(media / name) for name in ("astronaut.jpg", "blank.png")]
    args = (*files, "--model", str(tiny_bundle), "--format", "csv", "--out", str(out), "--resume")
    real_scan_file = scan_module.scan_file
    meanwhile = []

    def second_scan_meanwhile(detector, path, *more, **kwargs):
        if not meanwhile:  # the first scan is on its first file
            meanwhile.append(None)  # (a second scan that is not refused comes back here)
            meanwhile[0] = scan(capsys, *args)
        return real_scan_file(detector, path, *more, **kwargs)

    monkeypatch.setattr(scan_module, "scan_file", second_scan_meanwhile)
    code, _, err = scan(capsys, *args)
    assert code == EXIT_OK, err
    ((second_code, second_out, second_err),) = meanwhile
    assert second_code == EXIT_USAGE and second_out == ""
    assert f"{out}: another deepshield process is writing this scan's rows (pid {os.getpid()})" in second_err
    assert [row["path"] for row in csv.DictReader(io.StringIO(out.read_text()))] == files  # each once
    # The lock ends with the scan (a killed one's with its process): the next scan goes on from its rows.
    code, _, err = scan(capsys, *args)
    assert code == EXIT_OK and "2 files already in" in err and len(meanwhile) == 1


def resumed_after_a_failure(capsys, tiny_bundle, tmp_path) -> tuple[Path, Path, tuple[str, ...]]:
    """(inbox, out, args) of a resumable scan whose first run failed on the inbox's one file, since moved away."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "rows.jsonl"
    args = (str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--resume")
    assert scan(capsys, *args)[0] == EXIT_SOME_FAILED
    (inbox / "broken.jpg").unlink()
    return inbox, out, args


def test_a_resumed_scan_with_nothing_left_to_scan_keeps_its_earlier_failures(capsys, tiny_bundle, tmp_path):
    _, out, args = resumed_after_a_failure(capsys, tiny_bundle, tmp_path)  # nothing is left to scan
    code, _, err = scan(capsys, *args)
    assert code == EXIT_SOME_FAILED and "nothing to scan" in err
    out.write_text("")
    assert scan(capsys, *args)[0] == EXIT_OK


def test_a_resumed_scan_that_scans_more_keeps_its_earlier_failures(capsys, tiny_bundle, astronaut, tmp_path):
    """The earlier rows' failures count in the exit status of a resumed scan that scans new files too."""
    inbox, out, args = resumed_after_a_failure(capsys, tiny_bundle, tmp_path)
    cv2.imwrite(str(inbox / "new.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))  # a good file arrives
    code, _, _ = scan(capsys, *args)
    assert code == EXIT_SOME_FAILED and len(out.read_text().splitlines()) == 2


TERMINATED_SCAN = """
import os, signal, sys
import deepshield.inference.scan as scan_module
from deepshield.cli.main import main

whole, calls = scan_module.scan_file, []


def terminated_at_the_second(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` or `docker stop` ends a scan
    return whole(*args, **kwargs)


scan_module.scan_file = terminated_at_the_second
sys.exit(main(["scan", *sys.argv[1:]]))
"""


def test_sigterm_ends_a_scan_as_ctrl_c_does_keeping_its_rows(media, tiny_bundle, tmp_path):
    # SIGTERM killed a local scan outright (exit -15, its pool's semaphores left behind); under Ray it said
    # "interrupted" and exited 130: now both end as Ctrl-C does, the rows written kept for --resume.
    out = tmp_path / "rows.jsonl"
    files = [str(media / name) for name in ("astronaut.jpg", "blank.png", "clip.mp4")]
    args = [*files, "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out)]
    ran = subprocess.run([sys.executable, "-c", TERMINATED_SCAN, *args], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 130 and "interrupted" in ran.stderr, ran.stderr[-2000:]
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == files[:1]


def test_a_file_is_one_row_however_its_path_is_spelled(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(media)
    out = tmp_path / "rows.csv"
    code, _, _ = scan(capsys, "blank.png", "./blank.png", str(media / "blank.png"), "--model", str(tiny_bundle),
                      "--format", "csv", "--out", str(out))  # fmt: skip
    assert code == EXIT_OK and [row["path"] for row in csv.DictReader(out.open())] == ["blank.png"]
    # Resumed with its absolute path (a cron job run from elsewhere): already done.
    code, _, err = scan(capsys, str(media / "blank.png"), str(media / "astronaut.jpg"), "--model", str(tiny_bundle),
                        "--format", "csv", "--out", str(out), "--resume")  # fmt: skip
    assert code == EXIT_OK and "1 file already in" in err and ", 1 to scan" in err
    assert [row["path"] for row in csv.DictReader(out.open())] == ["blank.png", str(media / "astronaut.jpg")]


def test_resume_refuses_a_jsonl_file_it_did_not_write(capsys, media, tiny_bundle, tmp_path):
    out = tmp_path / "rows.jsonl"
    for text in ('not json\n{"path": "a.jpg", "status": "ok"}\n', "[1, 2]\n", "path,status\r\na.jpg,ok\r\n"):
        out.write_text(text)
        code, _, err = scan(
            capsys,
            str(media / "blank.png"),
            "--model",
            str(tiny_bundle),
            "--format",
            "jsonl",
            "--out",
            str(out),
            "--resume",
        )
        assert code == EXIT_USAGE and "is not a row of deepshield scan --format jsonl" in err, err
        assert out.read_bytes() == text.encode()  # left as it was


def test_resume_refuses_settings_beside_its_out_that_cannot_be_read_naming_the_file(
    capsys, media, tiny_bundle, tmp_path
):
    out = tmp_path / "rows.jsonl"
    args = (str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out))
    assert scan(capsys, *args)[0] == EXIT_OK
    settings = tmp_path / "rows.jsonl.settings.json"
    settings.write_bytes(b"\x89PNG\x00\xff")  # a UnicodeDecodeError traceback
    code, _, err = scan(capsys, *args, "--resume")
    assert code == EXIT_USAGE and err.count("\n") == 1, err
    assert f"{settings} is not UTF-8 text (byte 0x89 on line 1): scan into a new file" in err, err
    # An unknown or mistyped key was "cannot be read (ValidationError)", naming none.
    settings.unlink()
    assert scan(capsys, *args)[0] == EXIT_OK
    kept = json.loads(settings.read_text())
    for edit, said in (
        ({"threshhold": 0.5}, "unknown key threshhold; did you mean threshold?"),
        (
            {"frames": "many"},
            'frames: Input should be a valid integer, unable to parse string as an integer (got "many")',
        ),
    ):
        settings.write_text(json.dumps({**kept, **edit}))
        code, _, err = scan(capsys, *args, "--resume")
        assert code == EXIT_USAGE and f"{settings} cannot be read ({said}): scan into a new file" in err, err


def test_resume_refuses_a_csv_written_with_other_columns(capsys, media, tiny_bundle, tmp_path):
    out = tmp_path / "older.csv"
    older = b"path,status,kind\r\nphotos/a.jpg,ok,image\r\n"  # an earlier version's columns
    out.write_bytes(older)
    code, _, err = scan(
        capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv", "--out", str(out), "--resume"
    )
    assert code == EXIT_USAGE and "was written with other columns (path,status,kind)" in err
    assert out.read_bytes() == older  # nothing appended, nothing lost


def test_declared_sources_and_content_credentials_are_columns(capsys, astronaut, tiny_bundle, tmp_path):
    folder = tmp_path / "declared"
    folder.mkdir()
    (folder / "signed.jpg").write_bytes(with_credentials(photo_with_exif(astronaut), "image/jpeg"))
    save_image(folder / "plain.png", astronaut)
    code, out, _ = scan(capsys, str(folder), "--model", str(tiny_bundle), "--format", "csv")
    assert code == EXIT_OK
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out))}
    assert [rows["signed.jpg"][k] for k in ("declared_source", "declared_in", "credentials")] == [
        "trainedAlgorithmicMedia",
        "content_credentials",
        "valid",
    ]
    assert [rows["plain.png"][k] for k in ("declared_source", "declared_in", "credentials")] == ["", "", ""]
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signing_identity().root_pem)
    code, out, _ = scan(
        capsys, str(folder / "signed.jpg"), "--model", str(tiny_bundle), "--trust-anchors", str(anchors)
    )
    assert code == EXIT_OK
    assert "trainedAlgorithmicMedia [C2PA trusted]" in out.splitlines()[1]
    # an unsigned XMP code beside trusted credentials that name none read "digitalCapture [C2PA trusted]"
    from deepshield.cli.scan import declared_text
    from deepshield.inference.scan import ScanRow

    row = ScanRow(path="x", status="ok", declared_source="digitalCapture", declared_in="xmp", credentials="trusted")
    assert declared_text(row) == "digitalCapture (XMP, unsigned) [C2PA trusted]"
    assert "DECLARED: how the file's metadata says it was made" in out
    code, _, err = scan(capsys, str(folder), "--model", str(tiny_bundle), "--trust-anchors", str(folder / "plain.png"))
    assert code == EXIT_USAGE and "plain.png" in err


def test_files_can_be_listed_in_a_file_or_on_standard_input(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    spaced = tmp_path / "a photo with spaces.jpg"
    spaced.write_bytes((media / "astronaut.jpg").read_bytes())
    listing = tmp_path / "files.txt"
    listing.write_text(f"{media / 'blank.png'}\n\n{spaced}\n{tmp_path / 'gone.jpg'}\n")
    code, out, _ = scan(capsys, "--files-from", str(listing), "--model", str(tiny_bundle), "--format", "csv")
    assert code == EXIT_SOME_FAILED  # the listed file that is gone gets an error row
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["path"]).name for r in rows] == ["blank.png", "a photo with spaces.jpg", "gone.jpg"]
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{media / 'clip.mp4'}\n"))  # as `find ... | deepshield scan`
    code, out, _ = scan(
        capsys, str(media / "blank.png"), "--files-from", "-", "--model", str(tiny_bundle), "--format", "json"
    )
    assert code == EXIT_OK and [Path(r["path"]).name for r in json.loads(out)] == ["blank.png", "clip.mp4"]
    code, _, err = scan(capsys, "--model", str(tiny_bundle))
    assert code == EXIT_USAGE and "name the files or folders to scan, or a list of them with --files-from" in err
    code, _, err = scan(capsys, "--files-from", str(tmp_path / "no-list.txt"), "--model", str(tiny_bundle))
    assert code == EXIT_USAGE and "cannot read the list of files" in err and "no-list.txt" in err
    # A name that is not UTF-8 (Latin-1 from an old camera or zip), as find lists it: the list was refused whole.
    latin = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png")
    shutil.copy(media / "blank.png", latin)
    listing.write_bytes(os.fsencode(f"{latin}\n{spaced}\n"))
    code, out, err = scan(capsys, "--files-from", str(listing), "--model", str(tiny_bundle), "--format", "jsonl")
    assert code == EXIT_OK, err
    assert [json.loads(line)["path"] for line in out.splitlines()] == [latin, str(spaced)]
    listing.write_bytes(f"\ufeff{spaced}\r\n".encode())  # UTF-8 as Windows saves it: a byte order mark first
    code, out, err = scan(capsys, "--files-from", str(listing), "--model", str(tiny_bundle), "--format", "jsonl")
    assert code == EXIT_OK and [json.loads(line)["path"] for line in out.splitlines()] == [str(spaced)], err


def test_a_list_of_files_too_long_to_be_one_is_refused(capsys, tiny_bundle, tmp_path):
    # read whole: --files-from /dev/zero ran out of memory
    listing = tmp_path / "not-a-list"
    with open(listing, "wb") as handle:
        handle.truncate(50_000_001)  # sparse: NUL bytes, a line no longer than /dev/zero's
    code, out, err = scan(capsys, "--files-from", str(listing), "--model", str(tiny_bundle))
    assert code == EXIT_USAGE and out == ""
    (line,) = err.strip().splitlines()
    assert f"the list of files {listing} is over 50,000,000 characters long" in line


def test_a_scan_ends_with_its_outcomes_on_stderr(capsys, media, tiny_bundle, tmp_path):
    out = tmp_path / "rows.csv"
    files = [str(media / "blank.png"), str(tmp_path / "gone.jpg"), str(media / "astronaut.jpg")]
    code, _, err = scan(capsys, *files, "--model", str(tiny_bundle), "--format", "csv", "--out", str(out))
    assert code == EXIT_SOME_FAILED
    rows = list(csv.DictReader(io.StringIO(out.read_text())))  # in the order given
    assert rows[0]["verdict"] == "no_face" and rows[2]["verdict"] != "no_face"
    verdict = rows[2]["verdict"].replace("_", " ")  # the astronaut's, whichever the tiny model gives
    assert err.splitlines()[-1] == f"deepshield scan: 3 files scanned: 1 {verdict}, 1 no face, 1 failed; rows in {out}"


def test_model_shows_the_terms_and_the_record_on_real_media(capsys, tiny_bundle, tmp_path):
    bundle = bundle_with_record(tiny_bundle, tmp_path / "bundle")
    assert main(["model", "--model", str(bundle)]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tiny-test 0.0.1 (tiny, 64 px faces)"
    assert out[4] == "license: Weights: research use only (trained on a test set). Code: Apache-2.0."  # it was left out
    assert out[1:3] == [
        "face-swap score: threshold 50.0%, inconclusive 40.0% to 60.0%",
        "  fitted on: the tests' terms",
    ]
    assert out[3] == "synthetic-face score: not in this model"
    table = out[out.index("") + 1 :]
    assert table[0].split() == ["LABELLED", "SET", "FILES", "AUC", "FACES", "AUC", "REALS", "FLAGGED"]
    assert table[1].split() == ["dev-eval/modern-swaps", "0.60", "[0.43,", "0.74]", "0.73", "4.6%"]
    # 0.9981 shown to 3 places: to 2, a perfect 1.00
    assert table[2].split() == ["dev-eval/dfdc-sample", "†", "1.00", "[1.00,", "1.00]", "0.998", "-"]
    assert table[3].split()[-3:] == ["-", "0.93", "0.9%"]
    assert table[-1] == (
        "† dev-eval/dfdc-sample: only 1 real and 3 fake files: a bootstrap over so few files understates the "
        "uncertainty (an interval can shrink to a point)"
    )
    assert main(["model", "--model", str(bundle), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["metrics"]["val_auc"] == 0.93
    # What a fitted calibration was fitted on (a recalibrated bundle's labelled set) was said by --json alone.
    card = json.loads((bundle / "model_card.json").read_text())
    card["calibration"]["fitted_on"] = "dev-eval/x: 40 files with a face (20 real, 20 fake); 2026-01-02"
    (bundle / "model_card.json").write_text(json.dumps(card))
    assert main(["model", "--model", str(bundle)]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "face-swap score: threshold 50.0%, inconclusive 40.0% to 60.0%"
    assert out[2] == "  fitted on: dev-eval/x: 40 files with a face (20 real, 20 fake); 2026-01-02"
    assert main(["model", "--model", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert capsys.readouterr().err == f"deepshield: error: model bundle {tmp_path / 'nowhere'} does not exist\n"


def test_watch_scans_a_new_file_once_it_has_arrived_and_again_when_it_changes(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    save_image(inbox / "first.png", astronaut)
    photo = (inbox / "first.png").read_bytes()

    def copies_begin() -> None:
        (inbox / "copied.png").write_bytes(photo)
        (inbox / "arriving.png").write_bytes(photo[:1000])  # still being copied in
        (inbox / "stalled.png").write_bytes(photo[:1000])  # a copy that stalls for longer than a look

    def copy_ends(name: str) -> None:
        with open(inbox / name, "ab") as handle:
            handle.write(photo[1000:])

    # stalled.png is taken half-written at the second look
    at = {1: copies_begin, 2: lambda: copy_ends("arriving.png"), 3: lambda: copy_ends("stalled.png")}
    looks = watch_looks(monkeypatch, 6, at)
    out, page = tmp_path / "rows.jsonl", tmp_path / "page.html"
    code, _, err = scan(
        capsys,
        *(str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--watch", "0.5"),
        *("--html", str(page)),
    )
    # Each file counts by its latest row, as a --resume of the rows counts it: stalled.png's error row, which
    # its whole copy's row replaced, made the watch exit 1, and its page showed it twice.
    assert code == EXIT_OK and looks == [0.5] * 6
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # copied.png and stalled.png are taken at the second look (unchanged since the first), arriving.png
    # at the third; stalled.png, changed since it was taken, again at the fourth, whole
    names = [Path(row["path"]).name for row in rows]
    assert names == ["first.png", "copied.png", "stalled.png", "arriving.png", "stalled.png"]
    assert [row["status"] for row in rows] == ["ok", "ok", "error", "ok", "ok"]
    assert all(row["faces"] == 1 for row in rows if row["status"] == "ok")
    assert rows[-1]["sha256"] == hashlib.sha256(photo).hexdigest() != rows[2]["sha256"]
    assert "watching for new files every 0.5 s (Ctrl-C to stop)" in err
    assert err.splitlines()[-1].startswith("deepshield scan: 4 files scanned: ")
    assert "1 failed" not in err
    assert page.read_text().count("stalled.png</h2>") == 1 and "corrupt" not in page.read_text()
    assert (
        main(["scan", str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--resume"]) == 0
    )
    code, _, err = scan(capsys, str(inbox), "--model", str(tiny_bundle), "--watch", "1")
    assert code == EXIT_USAGE and "--watch needs --format jsonl or csv" in err


def test_a_file_still_arriving_when_a_watch_began_is_scanned_again_whole(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    # Taken at the watch's first look, its signature was the finished file's: it kept the error row its
    # half-written bytes got in the first scan, against the help's "once it has finished arriving".

    inbox = tmp_path / "inbox"
    save_image(inbox / "arriving.png", astronaut)
    photo = (inbox / "arriving.png").read_bytes()
    (inbox / "arriving.png").write_bytes(photo[:1000])
    # the copy ends after the first scan read it
    watch_looks(monkeypatch, 4, {1: lambda: (inbox / "arriving.png").write_bytes(photo)})
    out = tmp_path / "rows.jsonl"
    scan(capsys, str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--watch", "1")
    statuses = [json.loads(line)["status"] for line in out.read_text().splitlines()]
    assert statuses == ["error", "ok"]


def test_watch_scans_again_a_file_made_readable_or_replaced_and_a_metadata_change_once(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    # Size and modification time alone: a file that arrived unreadable kept its 'permission denied' row after
    # a chmod made it readable, and one replaced by another of the same size and time (cp -p, rsync) its
    # first row. A change of metadata only (a chmod of a file scanned) scans it once again, not at each look.

    inbox = tmp_path / "inbox"
    save_image(inbox / "a.png", astronaut)
    save_image(inbox / "c.bmp", astronaut)  # a BMP's size is its picture's: another of the same size
    real_open = os.open

    def open_as_permissions_say(path, flags, *args, **kwargs):  # what a file's mode does (root reads any)
        if Path(path).parent == inbox and not os.stat(path).st_mode & 0o444:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_as_permissions_say)

    def arrive_unreadable_and_replace() -> None:
        save_image(inbox / "b.png", astronaut)
        os.chmod(inbox / "b.png", 0)  # arrives unreadable
        before = os.stat(inbox / "c.bmp")
        save_image(tmp_path / "new.bmp", np.ascontiguousarray(astronaut[:, ::-1]))
        os.utime(tmp_path / "new.bmp", ns=(before.st_atime_ns, before.st_mtime_ns))
        (tmp_path / "new.bmp").replace(inbox / "c.bmp")
        assert os.stat(inbox / "c.bmp").st_size == before.st_size

    at = {
        1: arrive_unreadable_and_replace,
        3: lambda: os.chmod(inbox / "b.png", 0o644),
        6: lambda: os.chmod(inbox / "a.png", 0o600),  # its content as it was
    }
    watch_looks(monkeypatch, 12, at)
    out = tmp_path / "rows.jsonl"
    code, _, err = scan(
        capsys, str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--watch", "1"
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(row["path"]).name, row["status"]) for row in rows] == [
        ("a.png", "ok"),
        ("c.bmp", "ok"),
        ("b.png", "error"),
        ("c.bmp", "ok"),
        ("b.png", "ok"),
        ("a.png", "ok"),
    ], err
    assert rows[2]["error"] == "permission denied"
    assert rows[1]["sha256"] != rows[3]["sha256"] and rows[0]["sha256"] == rows[5]["sha256"]
    assert code == EXIT_OK


def watch_looks(monkeypatch, looks: int, at: dict[int, Callable[[], object]] | None = None) -> list[float]:
    """The waits a --watch scan takes between looks, recorded; `at[n]()` runs in the n-th wait (the files
    change meanwhile); Ctrl-C ends the watch at the `looks`-th."""
    import deepshield.cli.scan as scan_cli

    taken: list[float] = []
    actions = at or {}

    def one_look(seconds: float) -> None:
        taken.append(seconds)
        if len(taken) == looks:
            raise KeyboardInterrupt
        if len(taken) in actions:
            actions[len(taken)]()

    monkeypatch.setattr(scan_cli.time, "sleep", one_look)
    return taken


def test_a_watched_folder_that_cannot_be_listed_is_one_row_however_often_files_are_dropped_in(tmp_path, monkeypatch):
    # A drop box (others may write, not list) under a watched tree: its time changes with each file dropped in,
    # and each change made it a new error row.
    from deepshield.inference.scan import ArrivalWatch

    drop = tmp_path / "inbox" / "drop"
    drop.mkdir(parents=True)
    deny_listing(monkeypatch, drop)
    watch = ArrivalWatch([tmp_path / "inbox"], recursive=True, seen=set())
    looks = [watch.arrived(), watch.arrived()]
    for second in range(3):
        (drop / f"dropped-{second}.jpg").write_bytes(b"x")
        os.utime(drop, ns=(second * 10**9, second * 10**9))
        looks += [watch.arrived(), watch.arrived()]
    assert [[path.name for path in look] for look in looks] == [[], ["drop"]] + [[], []] * 3
    # One there when the scan began was scanned then, and is taken as the scan took it (its time then was
    # not the watch's None: it came back as changed).
    from deepshield.inference.scan import file_key, watch_signature

    began = ArrivalWatch([tmp_path / "inbox"], True, {file_key(drop)}, taken={file_key(drop): watch_signature(drop)})
    assert [began.arrived() for _ in range(4)] == [[]] * 4


def test_a_watch_does_not_scan_again_files_a_remount_numbered_anew(tmp_path, monkeypatch):
    # sshfs without use_ino, SMB with noserverino: a share unmounted and mounted again gives its files new inode
    # numbers, their size, modification and change times as they were; with the inode compared, every file
    # under the watch was scanned again.
    from deepshield.inference.scan import ArrivalWatch, collect_files, file_key, watch_signature

    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"x")
    taken = {file_key(path): watch_signature(path) for path in collect_files([tmp_path], False)}
    watch = ArrivalWatch([tmp_path], recursive=False, seen=set(taken), taken=dict(taken))
    real_stat = Path.stat

    def remounted(self, *args, **kwargs):
        info = real_stat(self, *args, **kwargs)
        fields = list(info)
        fields[stat.ST_INO] += 1000
        extra = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
        return os.stat_result(fields, {name: getattr(info, name) for name in extra})

    monkeypatch.setattr(Path, "stat", remounted)
    assert [watch.arrived() for _ in range(3)] == [[]] * 3


def test_a_watch_looks_at_each_file_it_has_taken_with_few_calls(tmp_path, monkeypatch):
    # Each look stat'ed every file 6 times and spelled its key 5 times (links, change time and inode checks
    # added apart): 20,000 files took 2.9 s a look, where 1.8 s had done before.
    import deepshield.inference.scan as scan_module
    from deepshield.inference.scan import ArrivalWatch, collect_files, file_key, watch_signature

    for i in range(50):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
    files = collect_files([tmp_path], False)
    keys = {file_key(path): watch_signature(path) for path in files}
    watch = ArrivalWatch([tmp_path], recursive=False, seen=set(keys), taken=keys)
    calls = {"stat": 0, "key": 0}

    def counted(name, call):
        def counting(*args, **kwargs):
            calls[name] += 1
            return call(*args, **kwargs)

        return counting

    monkeypatch.setattr(os, "stat", counted("stat", os.stat))
    monkeypatch.setattr(scan_module, "file_key", counted("key", scan_module.file_key))
    assert watch.arrived() == []
    assert calls["stat"] <= 3 * 50 + 5 and calls["key"] <= 3 * 50


def test_a_watched_folder_gone_for_a_while_is_no_row(capsys, astronaut, tiny_bundle, tmp_path, monkeypatch):

    inbox = tmp_path / "inbox"
    save_image(inbox / "a.png", astronaut)

    def comes_back() -> None:
        (tmp_path / "aside").rename(inbox)
        save_image(inbox / "b.png", astronaut)

    # gone at the first look: a share unmounted, a folder moved aside
    watch_looks(monkeypatch, 7, {1: lambda: inbox.rename(tmp_path / "aside"), 4: comes_back})
    out = tmp_path / "rows.jsonl"
    code, _, _ = scan(
        capsys, str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--watch", "1"
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(row["path"]).name, row["status"]) for row in rows] == [("a.png", "ok"), ("b.png", "ok")]
    assert code == EXIT_OK


def test_a_resumed_watch_does_not_scan_again_the_files_its_rows_hold(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    save_image(inbox / "a.png", astronaut)
    out = tmp_path / "rows.jsonl"
    args = (str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--resume")
    assert scan(capsys, *args)[0] == EXIT_OK
    looks = watch_looks(monkeypatch, 3)
    assert scan(capsys, *args, "--watch", "1")[0] == EXIT_OK and len(looks) == 3
    assert [Path(json.loads(line)["path"]).name for line in out.read_text().splitlines()] == ["a.png"]


def test_a_watch_whose_out_an_editor_replaced_stops_in_one_line(capsys, astronaut, tiny_bundle, tmp_path, monkeypatch):
    # A row deleted in an editor that saves a new file in --out's place (README: delete a row to redo its file)
    # while a watch ran: the watch went on appending to the old copy, every later row lost.

    inbox = tmp_path / "inbox"
    save_image(inbox / "a.png", astronaut)
    save_image(inbox / "c.png", astronaut)
    out = tmp_path / "rows.jsonl"

    def edit_out() -> None:
        edited = tmp_path / "rows.jsonl~"
        edited.write_text(out.read_text().splitlines(keepends=True)[1])  # a.png's row deleted, saved anew
        edited.replace(out)
        save_image(inbox / "b.png", astronaut)

    looks = watch_looks(monkeypatch, 5, {1: edit_out})
    code, _, err = scan(
        capsys, str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--watch", "1"
    )
    assert code == EXIT_USAGE and looks == [1.0], err
    assert err.splitlines()[-1] == (
        f"deepshield: error: --out {out} was replaced or removed while this scan wrote it (an editor saving it, "
        "say): its later rows would be lost with the old copy, so the scan stops here; edit it with no scan "
        "running, and a scan with --resume goes on from its rows"
    )
    assert [Path(json.loads(line)["path"]).name for line in out.read_text().splitlines()] == ["c.png"]


def test_a_watch_whose_out_was_replaced_by_an_empty_file_leaves_that_file(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    # Every row deleted in an editor (an empty file saved in the place of the --out this scan made): the watch
    # stopped, and its lock's clean-up, which removes the empty --out it made, removed the user's file instead.
    inbox = tmp_path / "inbox"
    save_image(inbox / "a.png", astronaut)
    out = tmp_path / "rows.jsonl"

    def empty_out() -> None:
        edited = tmp_path / "rows.jsonl~"
        edited.write_text("")
        edited.replace(out)
        save_image(inbox / "b.png", astronaut)

    looks = watch_looks(monkeypatch, 5, {1: empty_out})
    code, _, err = scan(
        capsys, str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--watch", "1"
    )
    assert code == EXIT_USAGE and looks == [1.0] and "was replaced or removed" in err, err
    assert out.is_file() and out.read_text() == ""


def test_resume_and_watch_take_a_link_to_a_file_in_the_rows_as_that_file(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    # One scan takes a file once however many names it has; --resume and --watch matched rows by name alone,
    # and scanned again a link (or a hard link) to a file already in them: two rows of one file.

    inbox, other = tmp_path / "inbox", tmp_path / "other"
    save_image(inbox / "a.png", astronaut)
    other.mkdir()
    out = tmp_path / "rows.jsonl"
    args = (str(inbox), str(other), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(out), "--resume")
    assert scan(capsys, *args)[0] == EXIT_OK
    (inbox / "0-link.png").symlink_to("a.png")  # listed before a.png
    os.link(inbox / "a.png", other / "hard.png")
    code, _, err = scan(capsys, *args)
    assert code == EXIT_OK and "1 file already in" in err and ", 0 to scan" in err, err

    def a_changes() -> None:  # scanned again under its own name
        (inbox / "a.png").write_bytes(save_image(tmp_path / "b.png", astronaut[:, ::-1].copy()).read_bytes())

    watch_looks(monkeypatch, 7, {1: lambda: (other / "1-link.png").symlink_to(inbox / "a.png"), 3: a_changes})
    assert scan(capsys, *args, "--watch", "1")[0] == EXIT_OK
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(row["path"]).name for row in rows] == ["a.png", "a.png"]
    assert rows[0]["sha256"] != rows[1]["sha256"]


def test_a_watched_folder_s_own_heatmaps_are_not_scanned(capsys, astronaut, tiny_bundle, tmp_path, monkeypatch):
    # --heatmaps inside the watched folder: each look found the last look's heatmaps as new photos, and
    # scanned them, writing heatmaps of heatmaps (a_face0_face0_face0.png ...) until Ctrl-C.
    inbox = tmp_path / "inbox"
    (inbox / "heat").mkdir(parents=True)
    save_image(inbox / "a.png", astronaut)
    save_image(inbox / "heat" / "left-from-before.png", astronaut)
    looks = watch_looks(monkeypatch, 4)
    out = tmp_path / "rows.jsonl"
    code, _, _ = scan(
        capsys, str(inbox), "-r", "--heatmaps", str(inbox / "heat"), "--model", str(tiny_bundle),
        "--format", "jsonl", "--out", str(out), "--watch", "1",
    )  # fmt: skip
    assert code == EXIT_OK and len(looks) == 4
    assert [Path(json.loads(line)["path"]).name for line in out.read_text().splitlines()] == ["a.png"]
    assert sorted(p.name for p in (inbox / "heat").iterdir()) == ["a_face0.png", "left-from-before.png"]


def test_html_page_shows_the_most_suspicious_files_first_with_their_faces(capsys, media, tiny_bundle, tmp_path):
    signed = tmp_path / "signed.jpg"
    signed.write_bytes(with_credentials((media / "astronaut.jpg").read_bytes(), "image/jpeg"))
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    page = tmp_path / "report" / "scan.html"
    files = [str(media / "blank.png"), str(broken), str(media / "clip.mp4"), str(signed)]
    code, _, err = scan(capsys, *files, "--model", str(tiny_bundle), "--html", str(page), "--format", "csv")
    assert code == EXIT_SOME_FAILED and err.splitlines()[-1].endswith(f"; page in {page}")
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "http://" not in text and "https://" not in text  # self-contained
    order = [text.index(name) for name in ("clip.mp4", "signed.jpg", "broken.jpg", "blank.png")]
    scored = sorted(order[:2])  # the files with a face first, then the file not analysed (unknown), then no face
    assert scored[1] < order[2] < order[3]
    assert "model tiny-test 0.0.1 · face-swap threshold 50.0%, inconclusive 40.0% to 60.0% · made" in text
    assert '<span class="label error">Not analysed</span>' in text
    assert text.count('<img src="data:image/jpeg;base64,') == 4  # crop and heatmap: one face, one person
    assert text.count("<svg") == 1  # the person's scores over time
    assert 'Declares "Created using generative AI" in its Content Credentials (valid)' in text
    assert "not a photo" not in text and "unsupported file type" in text
    for name in files:  # every file that could be read is named by its bytes, the broken one too
        assert f"SHA-256 {hashlib.sha256(Path(name).read_bytes()).hexdigest()}" in text


def test_the_scanned_folder_as_the_heatmap_folder_is_still_scanned(capsys, astronaut, tiny_bundle, tmp_path):
    # Everything under --heatmaps was left out: naming the scanned folder (or one above it) scanned nothing.
    photos = tmp_path / "photos"
    save_image(photos / "a.png", astronaut)
    args = ("--model", str(tiny_bundle), "--format", "json")
    code, out, _ = scan(capsys, str(photos), "--heatmaps", str(photos), *args)
    assert code == EXIT_OK and [Path(r["path"]).name for r in json.loads(out)] == ["a.png"]
    code, out, _ = scan(capsys, str(photos), "--heatmaps", str(photos), *args)  # its own heatmap is not scanned
    assert code == EXIT_OK and [Path(r["path"]).name for r in json.loads(out)] == ["a.png"]
    code, out, _ = scan(capsys, str(photos), "-r", "--heatmaps", str(tmp_path), *args)
    assert code == EXIT_OK and [Path(r["path"]).name for r in json.loads(out)] == ["a.png", "a_face0.png"]


def test_a_resumed_scan_is_refused_with_other_settings_and_found_from_another_folder(
    capsys, astronaut, tiny_bundle, tmp_path, monkeypatch
):
    save_image(tmp_path / "d1" / "a.jpg", astronaut)
    save_image(tmp_path / "d2" / "b.jpg", astronaut[::-1])
    monkeypatch.chdir(tmp_path)
    args = ("--model", str(tiny_bundle), "--format", "csv", "--out", "rows.csv")
    assert scan(capsys, "d1", *args)[0] == EXIT_OK
    kept = (tmp_path / "rows.csv").read_bytes()
    # Another threshold mixed two thresholds' verdicts in one file, without a word.
    code, _, err = scan(capsys, "d1", "d2", *args, "--resume", "--threshold", "0.01")
    assert code == EXIT_USAGE and "its own settings, and these differ: threshold 0.5 -> 0.01" in err
    assert (tmp_path / "rows.csv").read_bytes() == kept
    for option, differs in (
        (("--frames", "4"), "frames 32 -> 4"),
        (("--min-face-size", "40"), "min_face_size 20 -> 40"),
        (("--start", "1"), "start_s 0.0 -> 1.0"),
        (("--end", "9"), "end_s None -> 9.0"),
    ):
        code, _, err = scan(capsys, "d1", "d2", *args, "--resume", *option)
        assert code == EXIT_USAGE and f"these differ: {differs}." in err, err
    # From another folder, the rows' relative paths were other files: d1/a.jpg was scanned again.
    monkeypatch.chdir(tmp_path / "d2")
    resumed = ("../d1", "../d2", "--model", str(tiny_bundle), "--format", "csv", "--out", "../rows.csv", "--resume")
    code, _, err = scan(capsys, *resumed)
    assert code == EXIT_OK and "1 file already in ../rows.csv, 1 to scan" in err
    # Its rows name their files from the scan's folder too: a third run read "../d2/b.jpg" from there.
    assert [row["path"] for row in csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text()))] == [
        "d1/a.jpg",
        "d2/b.jpg",
    ]
    code, _, err = scan(capsys, *resumed)
    assert code == EXIT_OK and "2 files already in ../rows.csv, 0 to scan" in err
    # A path through a linked folder and back (d2/sub -> real, so sub/.. is the scan's folder) names the
    # file it reaches, b.jpg there; read as text it was d2/b.jpg, another file.
    (tmp_path / "real").mkdir()
    (tmp_path / "d2" / "sub").symlink_to(tmp_path / "real")
    save_image(tmp_path / "b.jpg", astronaut[::-1, ::-1])
    assert scan(capsys, "sub/../b.jpg", *resumed[2:])[0] == EXIT_OK
    assert [row["path"] for row in csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text()))][-1] == "b.jpg"
    # A file through a linked folder keeps the path as listed (it was written as the link's target).
    save_image(tmp_path / "real" / "c.jpg", astronaut[:, ::-1])
    assert scan(capsys, "sub/c.jpg", *resumed[2:])[0] == EXIT_OK
    assert [row["path"] for row in csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text()))][
        -1
    ] == "d2/sub/c.jpg"
    # Settings left beside a deleted --out are not the new scan's.
    (tmp_path / "rows.csv").unlink()
    assert scan(capsys, *resumed, "--threshold", "0.01")[0] == EXIT_OK
    assert json.loads((tmp_path / "rows.csv.settings.json").read_text())["threshold"] == 0.01


def test_a_file_refused_for_resume_is_left_as_it_was_and_an_unreadable_row_is_one_line(
    capsys, media, tiny_bundle, tmp_path
):
    # The refusal came after the last line, cut short, was cut off: a photo named as --out lost bytes.
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((media / "astronaut.jpg").read_bytes())
    before = photo.read_bytes()
    args = ("--model", str(tiny_bundle), "--resume")
    code, _, err = scan(capsys, str(media / "blank.png"), *args, "--format", "csv", "--out", str(photo))
    assert code == EXIT_USAGE and photo.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line one\nline two, no line end")
    assert scan(capsys, str(media / "blank.png"), *args, "--format", "jsonl", "--out", str(notes))[0] == EXIT_USAGE
    assert notes.read_bytes() == b"line one\nline two, no line end"
    # Refused for other settings: its last row, cut short, was cut off all the same.
    rows = tmp_path / "rows.jsonl"
    assert (
        scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(rows))[0]
        == 0
    )
    rows.write_bytes(rows.read_bytes()[:-10])
    cut = rows.read_bytes()
    code, _, err = scan(capsys, str(media), *args, "--format", "jsonl", "--out", str(rows), "--threshold", "0.7")
    assert code == EXIT_USAGE and "these differ: threshold 0.5 -> 0.7" in err and rows.read_bytes() == cut
    # A CSV line that is no row was a pydantic traceback, exit 1 ("some files failed").
    rows = tmp_path / "rows.csv"
    assert (
        scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv", "--out", str(rows))[0]
        == EXIT_OK
    )
    with open(rows, "a") as handle:
        handle.write("x,ok,image,no_signs_found,not a number\n")
    code, _, err = scan(capsys, str(media / "blank.png"), *args, "--format", "csv", "--out", str(rows))
    assert (
        code == EXIT_USAGE and "line 3 is not a row of deepshield scan --format csv" in err and "Traceback" not in err
    )


def test_a_resumed_scan_keeps_the_earlier_files_heatmaps(capsys, astronaut, tiny_bundle, tmp_path):
    # The resumed run's names started afresh: d2/a.jpg's heatmap took the name of d1/a.jpg's and overwrote it.
    save_image(tmp_path / "d1" / "a.jpg", astronaut)
    save_image(tmp_path / "d2" / "a.jpg", astronaut[:, ::-1])
    heat = tmp_path / "heat"
    args = (
        "--model",
        str(tiny_bundle),
        "--format",
        "csv",
        "--out",
        str(tmp_path / "rows.csv"),
        "--heatmaps",
        str(heat),
    )
    assert scan(capsys, str(tmp_path / "d1"), *args)[0] == EXIT_OK
    first = (heat / "a_face0.png").read_bytes()
    assert scan(capsys, str(tmp_path / "d1"), str(tmp_path / "d2"), *args, "--resume")[0] == EXIT_OK
    assert (heat / "a_face0.png").read_bytes() == first and (heat / "a_face0-2.png").is_file()


def test_out_and_html_naming_one_file_and_a_watch_past_a_day_are_refused(capsys, media, tiny_bundle, tmp_path):
    same = tmp_path / "same"
    code, _, err = scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv",
                        "--out", str(same), "--html", str(same))  # fmt: skip
    assert code == EXIT_USAGE and "--out and --html both name" in err and not same.exists()
    for seconds in ("1e10", "1e-300", "nan", "0.09", "86401"):  # 1e10 ended a whole scan in an OverflowError
        with pytest.raises(SystemExit) as usage:
            main(["scan", str(media / "blank.png"), "--format", "csv", "--watch", seconds])
        assert usage.value.code == EXIT_USAGE and "must be from 0.1 to 86400 seconds" in capsys.readouterr().err
    from deepshield.cli.args import watch_interval

    assert watch_interval("0.1") == 0.1 and watch_interval("86400") == 86400.0  # the bounds themselves hold


def test_rows_stream_into_a_pipe_named_as_out(capsys, media, tiny_bundle, tmp_path):
    # /dev/fd/N or >(gzip ...) as --out: the settings kept beside it ended the scan in a traceback, and a
    # CSV's header check could not ask a pipe where it stood.
    import threading

    read_end, write_end = os.pipe()
    received = []
    reader = threading.Thread(target=lambda: received.append(os.fdopen(read_end).read()), daemon=True)
    reader.start()
    out = f"/dev/fd/{write_end}"
    args = (str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv", "--out", out)
    try:
        code, _, err = scan(capsys, *args)
    finally:
        os.close(write_end)
    reader.join(30)
    assert code == EXIT_OK, err
    assert received[0].startswith("path,status,") and "blank.png,ok" in received[0]
    assert not Path(f"{out}.settings.json").exists()
    fifo = tmp_path / "rows.pipe"
    os.mkfifo(fifo)
    code, _, err = scan(capsys, *args[:-1], str(fifo), "--resume")  # refused before it is opened
    assert code == EXIT_USAGE and "--resume needs --out to be a file" in err


def test_an_engine_that_fails_to_start_leaves_out_as_it_was(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    import deepshield.engines as engines
    from deepshield.errors import DeepShieldError

    def unreachable(*args, **kwargs):
        raise DeepShieldError("cannot reach the Ray cluster at 127.0.0.1:1")

    monkeypatch.setattr(engines, "make_engine", unreachable)
    keep = tmp_path / "keep.csv"
    keep.write_text("path,status\nimportant,data\n")
    code, _, err = scan(
        capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "csv", "--out", str(keep)
    )
    assert code == EXIT_USAGE and "cannot reach" in err
    assert keep.read_text() == "path,status\nimportant,data\n"  # it was emptied to its header


def test_a_reader_that_leaves_ends_the_command_quietly():
    # `deepshield scan ... | head`: the pipe's reader left, and a BrokenPipeError traceback followed.
    import subprocess
    import sys

    program = (
        "import sys\nfrom deepshield.errors import exit_status\n"
        "def run():\n    sys.stdout.write('row\\n')\n    raise BrokenPipeError\n"
        "raise SystemExit(exit_status(run, 'deepshield'))"
    )
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert ran.returncode == EXIT_READER_GONE == 141 and ran.stderr == ""


def test_an_interrupted_json_scan_keeps_its_rows(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    # json and table are written at the end: an interrupted scan wrote its page but no row at all.
    import deepshield.inference.scan as scan_module

    real_scan_file = scan_module.scan_file
    scanned = []

    def stopped_at_the_second(detector, path, *args, **kwargs):
        scanned.append(path.name)
        if len(scanned) == 2:
            raise KeyboardInterrupt
        return real_scan_file(detector, path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "scan_file", stopped_at_the_second)
    out, page = tmp_path / "rows.json", tmp_path / "page.html"
    files = [str(media / "astronaut.jpg"), str(media / "blank.png")]
    code, _, _ = scan(
        capsys, *files, "--model", str(tiny_bundle), "--format", "json", "--out", str(out), "--html", str(page)
    )
    assert code == EXIT_INTERRUPTED and "interrupted after 1 of 2 files" in page.read_text()
    assert [Path(row["path"]).name for row in json.loads(out.read_text())] == ["astronaut.jpg"]


def test_resume_needs_a_streamed_output_file(capsys, media, tiny_bundle):
    code, _, err = scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--resume")
    assert code == EXIT_USAGE and "--resume needs --out and --format jsonl or csv" in err


def test_fifos_and_link_problems_get_error_rows_with_the_true_reason(capsys, tiny_bundle, tmp_path, astronaut):
    import threading

    folder = tmp_path / "odd"
    folder.mkdir()
    save_image(folder / "face.jpg", astronaut)
    os.mkfifo(folder / "pipe.mp4")
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("gone.png", folder / "dangling.png")
    os.mkfifo(tmp_path / "explicit-pipe")
    os.symlink("self", tmp_path / "self")
    outcome = {}
    args = [
        str(folder),
        str(tmp_path / "explicit-pipe"),
        str(tmp_path / "self"),
        "--model",
        str(tiny_bundle),
        "--format",
        "json",
    ]
    runner = threading.Thread(target=lambda: outcome.update(code=main(["scan", *args])), daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "scan blocked on a FIFO"
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert outcome["code"] == EXIT_SOME_FAILED
    assert rows["face.jpg"]["status"] == "ok"
    assert rows["pipe.mp4"]["error"] == rows["explicit-pipe"]["error"] == "not a regular file: a FIFO (named pipe)"
    assert rows["loop.jpg"]["error"] == rows["self"]["error"] == "symbolic link loop"
    assert rows["dangling.png"]["error"] == "broken symbolic link"
    assert all("sha256" not in row for name, row in rows.items() if name != "face.jpg")


def test_a_recursive_scan_goes_through_linked_folders(capsys, tiny_bundle, tmp_path, astronaut):
    # Path.glob("**/*") follows no linked folder: the photos a linked sub-folder held were not scanned.
    save_image(tmp_path / "elsewhere" / "face.jpg", astronaut)
    save_image(tmp_path / "inbox" / "own.jpg", astronaut)
    (tmp_path / "inbox" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "inbox" / "deeper").mkdir()
    (tmp_path / "inbox" / "deeper" / "dangling.png").symlink_to(tmp_path / "gone.png")
    code, out, _ = scan(capsys, str(tmp_path / "inbox"), "-r", "--model", str(tiny_bundle), "--format", "json")
    rows = {Path(r["path"]).relative_to(tmp_path / "inbox").as_posix(): r for r in json.loads(out)}
    assert code == EXIT_SOME_FAILED and set(rows) == {"own.jpg", "linked/face.jpg", "deeper/dangling.png"}
    assert rows["linked/face.jpg"]["status"] == "ok" and rows["deeper/dangling.png"]["error"] == "broken symbolic link"


def test_an_unreadable_file_is_an_error_row_saying_so(capsys, tiny_bundle, tmp_path, astronaut, monkeypatch):
    locked = tmp_path / "locked.jpg"
    save_image(locked, astronaut)
    real_open = os.open

    def refusing_open(path, *args, **kwargs):  # what a file without read permission does (root reads any)
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    code, out, _ = scan(capsys, str(locked), "--model", str(tiny_bundle), "--format", "json")
    assert code == EXIT_SOME_FAILED
    assert json.loads(out)[0]["error"] == "permission denied"


def test_no_native_log_lines_reach_stderr(media, tiny_bundle):
    # Without the quieting environment variables: the detector silences MediaPipe's start-up itself.
    env = {key: value for key, value in os.environ.items() if key not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepshield.cli.main",
            "scan",
            str(media / "astronaut.jpg"),
            str(media / "clip.mp4"),
            "--model",
            str(tiny_bundle),
            "--frames",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert NATIVE_LOG_LINE.search(done.stderr) is None, done.stderr
    assert "astronaut.jpg" in done.stdout and "clip.mp4" in done.stdout


def test_html_page_says_which_score_made_each_faces_call(astronaut, tiny_bundle):
    from deepshield.inference.analysis import Detector
    from deepshield.inference.scan import ScanRow
    from deepshield.inference.scan_report import PageTerms, ScanPage
    from deepshield.inference.verdict import shown_probability

    result = Detector.from_bundle(tiny_bundle).analyze_image(cv2.resize(astronaut, (640, 640)))  # no caution
    face = result.faces[0]
    generated = face.model_copy(
        update={"synthetic_probability": 0.775, "label": "likely_manipulated", "verdict_driver": "synthetic"}
    )
    swapped = face.model_copy(
        update={"index": 1, "synthetic_probability": 0.004, "label": "no_signs_found", "verdict_driver": "manipulation"}
    )

    def photo(path, faces):
        return ScanRow(
            path=path, status="ok", kind="image", faces=len(faces), result=result.model_copy(update={"faces": faces})
        )

    page = ScanPage(PageTerms("tiny-test 0.0.1", result.threshold, 0.5))
    page.add(photo("two.jpg", [generated, swapped]))
    text = page.html("1 file scanned")
    shown = shown_probability(face.probability)
    assert f"Face 1: face-swap {shown} · synthetic-face 77.5% · Likely AI-generated" in text
    assert f"Face 2: face-swap {shown} · synthetic-face 0.4% · No signs found</div>" in text
    assert text.index("Face 1:") < text.index("Face 2:")
    # The most suspicious face leads, keeping its number: here the second in reading order.
    calm, flagged = (
        generated.model_copy(update={"label": "no_signs_found"}),
        swapped.model_copy(update={"label": "likely_manipulated"}),
    )
    page.add(photo("calm-then-flagged.jpg", [calm, flagged]))
    text = page.html("2 files")
    part = text[text.index("calm-then-flagged.jpg") :]
    assert part.index("Face 2:") < part.index("Face 1:")
    small = face.model_copy(update={"cautions": ["small face (56 px wide): real faces this small were flagged"]})
    page.add(photo("small.jpg", [small]))
    assert "Take care: small face (56 px wide): real faces this small were flagged.</span></div>" in page.html(
        "3 files"
    )


def test_verbose_may_come_before_or_after_the_command():
    from deepshield.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["scan", "x.jpg", "-v"]).verbose is True
    assert parser.parse_args(["-v", "scan", "x.jpg"]).verbose is True
    assert parser.parse_args(["scan", "x.jpg"]).verbose is False
    assert parser.parse_args(["dataset", "stats", "ds", "--verbose"]).verbose is True


def test_table_columns_stay_aligned_for_wide_and_control_characters():
    from deepshield.cli.columns import aligned

    # A newline in a file's name split its row; CJK names, two columns a character, pushed the rest right.
    assert aligned([["FILE", "KIND"], ["new\nline.jpg", "image"], ["日本.jpg", "video"], ["é.jpg", "-"]]) == [
        "FILE           KIND",
        "new\\nline.jpg  image",
        "日本.jpg       video",
        "é.jpg          -",
    ]
    # A direction control in a name turned the rest of its row round in a right-to-left terminal (and, taking
    # no column, put it one out): it is shown escaped, as a newline is.
    assert aligned([["FILE", "VERDICT"], ["Rede_\u202eKCAF.jpg", "no_signs_found"], ["a.jpg", "-"]]) == [
        "FILE                 VERDICT",
        "Rede_\\u202eKCAF.jpg  no_signs_found",
        "a.jpg                -",
    ]
    # The marks are direction controls too (Unicode's Bidi_Control): an RLM first in a name made its row right to
    # left as an override did, and took no column either.
    assert aligned([["FILE", "VERDICT"], ["\u200fRede.jpg", "fake"], ["a\u200eb\u061c.jpg", "-"]]) == [
        "FILE                VERDICT",
        "\\u200fRede.jpg      fake",
        "a\\u200eb\\u061c.jpg  -",
    ]
    # A zero-width space or joiner takes no column: counted as one, it put the row's columns one out.
    assert aligned([["FILE", "KIND"], ["a\u200bb.jpg", "image"], ["c\u200dd.jpg", "-"], ["ab.jpg", "-"]]) == [
        "FILE    KIND",
        "a\u200bb.jpg  image",
        "c\u200dd.jpg  -",
        "ab.jpg  -",
    ]


def test_a_person_seen_in_one_frame_has_a_dot_for_a_score_line():
    # A polyline of one point draws nothing: the chart of a person seen once showed only the threshold.
    from deepshield.inference.results import TrackPoint, TrackResult
    from deepshield.inference.scan_report import _score_line

    point = TrackPoint.model_construct(timestamp_s=1.5, probability=0.7)
    once = _score_line(
        TrackResult.model_construct(points=[point], verdict_driver="manipulation"), (1.5, 2.5), 0.5, None
    )
    assert '<circle cx="4.0" cy="13.2" r="2.5"' in once and "<polyline" not in once
    later = point.model_copy(update={"timestamp_s": 2.5})
    twice = _score_line(
        TrackResult.model_construct(points=[point, later], verdict_driver="manipulation"), (1.5, 2.5), 0.5, None
    )
    assert '<polyline points="4.0,13.2 228.0,13.2"' in twice and "<circle" not in twice


def test_every_person_of_a_video_is_drawn_on_the_videos_time_axis_by_the_score_behind_their_verdict():
    # Each person was stretched over their own time: one peaking at 10.6 s and one at 0.1 s both sat at the left.
    from deepshield.inference.results import TrackPoint, TrackResult
    from deepshield.inference.scan_report import _score_line

    def person(times, driver="manipulation"):
        points = [TrackPoint.model_construct(timestamp_s=t, probability=0.7, synthetic_probability=0.9) for t in times]
        return TrackResult.model_construct(points=points, verdict_driver=driver)

    late = _score_line(person([10.0, 12.0]), (0.0, 12.0), 0.5, 0.3)
    assert '<polyline points="190.7,13.2 228.0,13.2"' in late and "<span>0.0 s</span>" in late and "12.0 s" in late
    generated = _score_line(person([0.0, 12.0], "synthetic"), (0.0, 12.0), 0.5, 0.3)
    assert 'aria-label="synthetic-face score over time"' in generated
    assert '<polyline points="4.0,6.4 228.0,6.4"' in generated and 'y1="26.8"' in generated  # its own threshold
    # Past a minute, times read as the part analysed reads (12:30 to 14:00), not "750.0 s".
    long = _score_line(person([760.0, 835.5]), (750.0, 835.5), 0.5, None)
    assert "<span>12:30</span>" in long and "<span>13:55.5</span>" in long and " s</span>" not in long


def test_html_page_orders_files_by_the_score_behind_their_verdict_and_says_ai_generated(astronaut, tiny_bundle):
    from deepshield.inference.scan import ScanRow
    from deepshield.inference.scan_report import PageTerms, ScanPage

    def row(name, verdict, probability, synthetic, driver):
        return ScanRow(
            path=name,
            status="ok",
            kind="image",
            verdict=verdict,
            probability=probability,
            synthetic_probability=synthetic,
            verdict_driver=driver,
            faces=1,
        )

    page = ScanPage(PageTerms("m 1", threshold=0.5, synthetic_threshold=0.6))
    page.add(row("swap-just-over.jpg", "likely_manipulated", 0.62, 0.01, "manipulation"), earlier="rows.jsonl")
    page.add(row("generated.jpg", "likely_manipulated", 0.1, 0.999, "synthetic"), earlier="rows.jsonl")
    text = page.html("0 files scanned")
    # The file the synthetic-face score flagged at 99.9% came second, by its face-swap score of 10%.
    assert text.index("generated.jpg") < text.index("swap-just-over.jpg")
    assert text.count("Likely AI-generated") == 1 and "synthetic-face threshold 60.0%" in text
    # The header says the model's limits, once said by `deepshield model` alone.
    assert "not a sole basis for decisions about people" in text
    assert "No signs found does not prove a file authentic (the model misses many face edits" in text


def test_html_page_reads_on_phones_and_paper_and_says_each_files_headline(capsys, media, tiny_bundle, tmp_path):
    # The report analysts forward: laid out at 980 px on a phone (5 px text), labels white on colour that print
    # drops (light grey on white), cards cut across pages, one heading for screen readers, and a card without
    # the headline's caveat ("does not prove the file is authentic") once printed or shown alone.
    page = tmp_path / "report.html"
    code, out, _ = scan(
        capsys, str(media / "astronaut.jpg"), "--model", str(tiny_bundle), "--format", "json", "--html", str(page)
    )
    (row,) = json.loads(out)
    text = page.read_text(encoding="utf-8")
    assert code == EXIT_OK and '<meta name=viewport content="width=device-width,initial-scale=1">' in text
    assert "default-src 'none'; img-src data:" in text  # a hostile name that escaped escaping runs nothing
    assert "@media print{" in text and "break-inside:avoid" in text and ".label{color:#000" in text
    assert '<h2 class="name">' in text
    assert html.escape(row["result"]["verdict"]["headline"], quote=True) in text


def test_html_page_writes_a_name_that_is_not_utf8_and_rows_resume_on_it(capsys, tiny_bundle, astronaut, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = os.fsdecode(b"caf\xe9.jpg")  # a name from a Latin-1 system
    save_image(folder / odd, astronaut)
    page, rows = tmp_path / "page.html", tmp_path / "rows.csv"
    args = [str(folder), "--model", str(tiny_bundle), "--format", "csv", "--out", str(rows), "--html", str(page)]
    code, _, err = scan(capsys, *args)  # writing the page (and CSV rows) was a UnicodeEncodeError
    assert code == EXIT_OK, err
    assert "caf\\xe9.jpg" in page.read_text(encoding="utf-8")
    assert os.fsencode(odd) in rows.read_bytes()  # the name's own bytes
    code, _, err = scan(capsys, *args, "--resume")
    assert code == EXIT_OK and "1 file already in" in err and len(rows.read_bytes().splitlines()) == 2
    # Rows kept in a file whose own name is not UTF-8: the resumed page names it too.
    odd_rows = tmp_path / os.fsdecode(b"r\xe9.csv")
    rows.rename(odd_rows)
    said = io.StringIO()  # as a terminal's stderr takes such a name (backslashreplace); pytest's capture is strict
    with contextlib.redirect_stderr(said):
        code = main(["scan", *args[:-4], "--out", str(odd_rows), "--html", str(page), "--resume"])
    assert code == EXIT_OK, said.getvalue()
    assert "(rows in " in page.read_text() and "r\\xe9.csv" in page.read_text()
    assert not Path(f"{page}.part").exists()


def test_a_resumed_scans_page_shows_the_earlier_files_and_an_empty_scan_replaces_a_stale_page(
    capsys, media, tiny_bundle, tmp_path
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(media / "astronaut.jpg", inbox / "a.jpg")
    rows, page = tmp_path / "rows.jsonl", tmp_path / "page.html"
    args = [str(inbox), "--model", str(tiny_bundle), "--format", "jsonl", "--out", str(rows), "--html", str(page)]
    assert scan(capsys, *args)[0] == EXIT_OK
    shutil.copy(media / "blank.png", inbox / "b.png")
    assert scan(capsys, *args, "--resume")[0] == EXIT_OK
    text = page.read_text()
    # The page held only b.png: a.jpg, flagged or not, was gone from it.
    assert "a.jpg" in text and f"Scanned in an earlier run of this scan (rows in {rows})" in text
    assert "1 file scanned: 1 no face · 1 earlier file shown from their rows" in text
    assert scan(capsys, *args, "--resume")[0] == EXIT_OK  # nothing new: the page still shows both
    assert "a.jpg" in page.read_text() and "b.png" in page.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = scan(capsys, str(empty), "--model", str(tiny_bundle), "--html", str(page))
    assert code == EXIT_OK and "no media files found" in err  # the old page was left, as if it were this scan's
    assert "a.jpg" not in page.read_text() and "no media files found" in page.read_text()


def test_an_interrupted_scan_writes_the_page_of_the_files_done(capsys, media, tiny_bundle, tmp_path, monkeypatch):
    from deepshield.inference.scan import ScanJob

    run = ScanJob.run

    def stopped_at_the_second(self, detector, path):
        if path.name == "blank.png":
            raise KeyboardInterrupt  # as Ctrl-C or SIGTERM arrives
        return run(self, detector, path)

    monkeypatch.setattr(ScanJob, "run", stopped_at_the_second)
    page = tmp_path / "page.html"
    files = [str(media / "astronaut.jpg"), str(media / "blank.png")]
    code, _, _ = scan(capsys, *files, "--model", str(tiny_bundle), "--html", str(page))
    assert code == 130
    text = page.read_text()  # no page was written
    assert "astronaut.jpg" in text and "interrupted after 1 of 2 files" in text


def test_a_folders_camera_named_files_are_scanned(capsys, media, tiny_bundle, tmp_path):
    # .jfif photos and AVCHD camcorders' .mts videos were passed over without a word.
    import shutil

    folder = tmp_path / "card"
    folder.mkdir()
    shutil.copy(media / "astronaut.jpg", folder / "photo.jfif")
    shutil.copy(media / "clip.mp4", folder / "00001.mts")
    code, out, _ = scan(capsys, str(folder), "--model", str(tiny_bundle), "--format", "json", "--frames", "2")
    assert code == EXIT_OK
    assert sorted((Path(row["path"]).name, row["kind"]) for row in json.loads(out)) == [
        ("00001.mts", "video"), ("photo.jfif", "image"),
    ]  # fmt: skip


def test_resume_reads_back_a_csv_path_holding_a_line_break(capsys, media, tiny_bundle, tmp_path):
    # Read line by line, a quoted path with a line break (or U+2028, which splitlines also splits at)
    # came back cut in two: the file was scanned again and a row of status None failed the exit code.
    import shutil

    folder = tmp_path / "odd names"
    folder.mkdir()
    shutil.copy(media / "astronaut.jpg", folder / "a\nb.jpg")
    shutil.copy(media / "astronaut.jpg", folder / "c\u2028d.jpg")
    out = tmp_path / "rows.csv"
    args = [str(folder), "--model", str(tiny_bundle), "--format", "csv", "--out", str(out)]
    assert scan(capsys, *args)[0] == EXIT_OK
    code, _, err = scan(capsys, *args, "--resume")
    assert (
        code == EXIT_OK
        and "2 files already in" in err
        and len(list(csv.DictReader(io.StringIO(out.read_text(), newline="")))) == 2
    )
    # A scan killed as it wrote a row, inside such a name: that row is cut off and its file scanned again,
    # where the cut row, ending at the name's line break, was read as no row and the file refused.
    shutil.copy(media / "astronaut.jpg", folder / "e\nf.jpg")
    assert scan(capsys, *args, "--resume")[0] == EXIT_OK
    data = out.read_bytes()
    out.write_bytes(data[: data.rindex(b"e\nf.jpg") + 2])
    code, _, err = scan(capsys, *args, "--resume")
    rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    assert code == EXIT_OK and "2 files already in" in err
    assert [Path(row["path"]).name for row in rows] == ["a\nb.jpg", "c\u2028d.jpg", "e\nf.jpg"]
    assert all(row["status"] == "ok" for row in rows)
    # A quote left open further up, by hand, is no row cut short: the rows after it are not cut off.
    edited = out.read_bytes() + b'x.jpg,"error\r\ny.jpg,error,,,,,,,,,,,,,,no such file\r\n'
    out.write_bytes(edited)
    scan(capsys, *args, "--resume")
    assert out.read_bytes().startswith(edited)


def test_a_quote_left_open_near_the_top_of_a_long_csv_is_read_past_once():
    # Each line stepped back over counted the file's quotes again from its start: a quote left open near the
    # top of 100,000 rows (12 MB) held --resume for minutes.
    from deepshield.cli.scan import _rows_end

    read = 0

    class Counted(bytes):
        def count(self, part, start=0, end=None) -> int:  # type: ignore[override]
            nonlocal read
            read += (len(self) if end is None else end) - start
            return super().count(part, start, end)

    rows = [b"x%04d.jpg,error,,,,,,,,,,,,,,no such file\r\n" % i for i in range(2_000)]
    rows[3] = b'x"0003.jpg,error\r\n'
    data = Counted(b"".join(rows) + b"cut.jpg,o")
    assert _rows_end(data, "csv") == len(data) - len(b"cut.jpg,o")
    assert read < 3 * len(data)


def test_model_shows_the_real_files_the_synthetic_score_flags(capsys, tiny_bundle, tmp_path):
    # A real file the synthetic-face score flagged is a false alarm of the product: the table read 0.0%.
    bundle = bundle_with_record(tiny_bundle, tmp_path / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    card["metrics"]["synthetic_bench_modern_swaps_fpr"] = 0.1
    (bundle / "model_card.json").write_text(json.dumps(card))
    assert main(["model", "--model", str(bundle)]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    table = out[out.index("") + 1 :]
    assert table[0].endswith("REALS FLAGGED  BY SYNTH SCORE")
    assert table[1].split()[-2:] == ["4.6%", "10.0%"]
    assert main(["model", "--model", str(bundle), "--json"]) == EXIT_OK  # the API's record carries it too
    from deepshield.models.card import ModelCard

    record = ModelCard.model_validate_json((bundle / "model_card.json").read_text()).record()
    assert record.benchmarks[0].synthetic_real_flagged == 0.1


def test_model_shows_the_validation_figures_of_a_model_trained_without_benchmarks(capsys, tiny_bundle, tmp_path):
    bundle = bundle_with_record(tiny_bundle, tmp_path / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    card["metrics"] = {k: v for k, v in card["metrics"].items() if not k.startswith("bench_")}
    (bundle / "model_card.json").write_text(json.dumps(card))
    assert main(["model", "--model", str(bundle)]) == EXIT_OK  # it printed no figure at all
    out = capsys.readouterr().out.splitlines()
    table = out[out.index("") + 1 :]
    assert table[0].split()[:2] == ["LABELLED", "SET"] and table[1].split()[-3:] == ["-", "0.93", "0.9%"]
    assert table[-1] == "No real media measured this model: its own blends say little about real deepfakes."


def test_model_shows_a_figure_whose_interval_has_one_end_without_it(capsys, tiny_bundle, tmp_path):
    # A card with a low end and no high one made `deepshield model` end in a traceback.
    bundle = bundle_with_record(tiny_bundle, tmp_path / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    del card["metrics"]["bench_modern_swaps_file_auc_hi"]
    (bundle / "model_card.json").write_text(json.dumps(card))
    assert main(["model", "--model", str(bundle)]) == EXIT_OK
    assert "dev-eval/modern-swaps 0.60 " in " ".join(capsys.readouterr().out.split())


def test_the_tables_caution_legend_names_every_caution():
    # It listed "a small face, an uncertain detection, a picture read turned": not the tightly framed face.
    from deepshield.cli.scan import table_note
    from deepshield.inference.cautions import CAUTIONS, caution_words, face_cautions

    legend = next(line for line in table_note(cautioned=True).splitlines() if line.startswith("CAUTION: "))
    assert "(a small face, an uncertain detection, a tightly framed face, a picture read turned)" in legend
    # Every sentence face_cautions says comes from CAUTIONS, each of which the legend names.
    said = face_cautions([60], 90, [0.5], [0.2], "no_signs_found")
    assert len(said) == len(CAUTIONS) and all(caution.named in legend for caution in CAUTIONS)
    # And the table names each in its own words, from the CSV's cautions cell.
    assert caution_words("; ".join(said)) == [
        "small face",
        "uncertain detection",
        "tightly framed",
        "read after turning",
    ]
    assert caution_words(None) == [] and caution_words("") == []


def test_the_summary_line_says_which_likely_manipulated_files_the_synthetic_score_flagged():
    # "3 likely manipulated" held an AI-generated face without a word; "1 likely AI-generated" then named a
    # verdict the VERDICT column calls likely_manipulated.
    import collections

    from deepshield.cli.scan import outcome_line, outcome_of
    from deepshield.inference.scan import ScanRow

    rows = [
        ScanRow(path="a", status="ok", verdict="likely_manipulated", verdict_driver="manipulation"),
        ScanRow(path="b", status="ok", verdict="likely_manipulated", verdict_driver="synthetic"),
        ScanRow(path="c", status="ok", verdict="inconclusive", verdict_driver="synthetic"),
        ScanRow(path="d", status="error", error="unreadable"),
    ]
    outcomes = collections.Counter(outcome_of(row) for row in rows)
    assert outcome_line(outcomes) == (
        "4 files scanned: 2 likely manipulated (1 by the synthetic-face score), 1 inconclusive, 1 failed"
    )
    only = collections.Counter(outcome_of(row) for row in rows[1:2])
    assert outcome_line(only) == "1 file scanned: 1 likely manipulated (1 by the synthetic-face score)"
    assert outcome_line(collections.Counter()) == "no new file scanned"  # it read "0 files scanned: "


def test_a_file_scanned_again_keeps_its_heatmap_names(tmp_path):
    # --watch scans a rewritten file again: its new heatmaps went by a new name (a-2_face0.png), and the old
    # ones stayed under the file's own.
    from deepshield.cli.scan import HeatmapCopies

    copies = HeatmapCopies()
    for folder in ("d1", "d2", "D3"):
        (tmp_path / folder).mkdir()
    names = [str(tmp_path / "d1" / "a.jpg"), str(tmp_path / "d2" / "a.jpg"), str(tmp_path / "D3" / "A.png")]
    assert [copies.of(name) for name in (*names, names[0], names[1])] == [1, 2, 3, 1, 2]


def test_a_no_signs_call_of_two_scores_is_not_said_to_be_one_scores():
    # "No signs found (by the synthetic-face score)" read as if that score alone had been checked.
    from deepshield.inference.results import ScoringTerms
    from deepshield.inference.scan_report import _call
    from deepshield.models.card import InconclusiveBand

    terms = ScoringTerms(
        model="m", threshold=0.5558, inconclusive=InconclusiveBand(low=0.5, high=0.574166, fitted_on="test"),
        synthetic_threshold=0.4616, synthetic_inconclusive=InconclusiveBand(low=0.134, high=0.5678, fitted_on="t"),
    )  # fmt: skip
    assert _call(0.1, 0.1339, "no_signs_found", "synthetic", terms) == (
        "face-swap 10.0% · synthetic-face 13.39% · No signs found"
    )
    assert _call(0.1, 0.3, "inconclusive", "synthetic", terms).endswith("(by the synthetic-face score)")


def test_no_progress_keeps_the_bar_off_a_terminal(media, tiny_bundle, monkeypatch):
    # evaluate, prepare and dataset balance took --no-progress; scan, on a terminal, drew its bar whatever was said.
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def stderr_of(*extra: str) -> str:
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        argv = [str(media / "blank.png"), "--model", str(tiny_bundle), "--format", "json", *extra]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["scan", *argv]) == EXIT_OK
        return terminal.getvalue()

    assert "1/1" in stderr_of()  # the bar, on a terminal
    quiet = stderr_of("--no-progress")
    assert "1/1" not in quiet and "\r" not in quiet


def test_a_page_written_removes_the_temporary_pages_killed_scans_left(capsys, media, tiny_bundle, tmp_path):
    # A scan killed while it wrote --html left <page>.<its pid>.part for good: atomic_file's sweep of such
    # files ran for checkpoints and caches only.
    from tests.conftest import left_by_a_killed_writer

    page = tmp_path / "page.html"
    left_by_a_killed_writer(page)
    code, _, err = scan(capsys, str(media / "blank.png"), "--model", str(tiny_bundle), "--html", str(page))
    assert code == EXIT_OK, err
    assert sorted(os.listdir(tmp_path)) == ["page.html"]
    # So do a json --out's and the settings beside a streamed one (written whole or not at all too).
    left_by_a_killed_writer(tmp_path / "rows.json", tmp_path / "rows.jsonl.settings.json")
    photo = [str(media / "blank.png"), "--model", str(tiny_bundle)]
    for out, form in (("rows.json", "json"), ("rows.jsonl", "jsonl")):
        code, _, err = scan(capsys, *photo, "--format", form, "--out", str(tmp_path / out))
        assert code == EXIT_OK, err
    assert not list(tmp_path.glob("*.part"))


def test_a_file_named_through_a_link_is_scanned_once_under_the_first_name(capsys, media, tiny_bundle, tmp_path):
    # scan a.png link-to-a.png (or a hard link) scanned the one file twice: two rows, counted twice.
    link, hard = tmp_path / "link-to-blank.png", tmp_path / "hard.png"
    link.symlink_to(media / "blank.png")
    os.link(media / "blank.png", hard)
    for first, *others in ((link, media / "blank.png", hard), (media / "blank.png", hard, link)):
        code, out, err = scan(capsys, str(first), *map(str, others), "--model", str(tiny_bundle), "--format", "json")
        assert code == EXIT_OK, err
        assert [row["path"] for row in json.loads(out)] == [str(first)]
        assert "1 file scanned" in err
    broken = [tmp_path / "gone-1.png", tmp_path / "gone-2.png"]
    for path in broken:
        path.symlink_to(tmp_path / "missing.png")
    code, out, _ = scan(capsys, *map(str, broken), "--model", str(tiny_bundle), "--format", "json")
    assert [row["path"] for row in json.loads(out)] == list(map(str, broken))  # each a broken link, said


def test_a_videos_faces_are_its_counted_people_in_the_table_csv_json_and_page(capsys, astronaut, tiny_bundle, tmp_path):
    """One person all through a video and a stray face in two of its 8 frames (too few to count): the table, the
    CSV and JSON said 2 faces beside the page's "2 people (1 counted)"; all say 1 counted person now."""
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    frames = [
        np.hstack([np.roll(small, 2 * i, axis=1), small if i in (3, 4) else np.full_like(small, 90)]) for i in range(8)
    ]
    video = write_video(tmp_path / "stray.mp4", frames)
    page, rows = tmp_path / "scan.html", tmp_path / "rows.csv"
    code, out, _ = scan(
        capsys,
        str(video),
        "--model",
        str(tiny_bundle),
        "--frames",
        "8",
        "--html",
        str(page),
        "--out",
        str(rows),
        "--format",
        "csv",
    )
    assert code == EXIT_OK
    assert [row["faces"] for row in csv.DictReader(rows.open())] == ["1"]
    assert "1 person counted (2 seen)" in page.read_text()
    code, out, _ = scan(capsys, str(video), "--model", str(tiny_bundle), "--frames", "8")
    header, row = out.splitlines()[:2]
    assert row[header.index("FACES") :].split()[0] == "1"  # columns are aligned; a caution holds spaces
    code, out, _ = scan(capsys, str(video), "--model", str(tiny_bundle), "--frames", "8", "--format", "json")
    assert [row["faces"] for row in json.loads(out)] == [1]
