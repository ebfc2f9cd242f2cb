"""`deepshield scan`: analyse images and videos, one result row per file."""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from deepshield.cli.args import (
    check_engine_arguments,
    check_output_file,
    check_output_folder,
    engine_arguments,
    given_path,
    int_up_to,
    model_argument,
    positive_int,
    probability,
    progress_argument,
    trust_anchors_argument,
    video_time,
    watch_interval,
)
from deepshield.cli.columns import aligned
from deepshield.errors import say
from deepshield.media.files import NAME_BYTES, shown_name
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.plural import numbered
from deepshield.serving.settings import MAX_VIDEO_FRAMES
from deepshield.strict import StrictModel, explain

if TYPE_CHECKING:
    from deepshield.inference.scan import ScanRow

SUMMARY_FIELDS = (
    "path",
    "status",
    "kind",
    "verdict",
    "probability",
    "synthetic_probability",
    "verdict_driver",
    "faces",
    "cautions",
    "reason",
    "part",
    "declared_source",
    "declared_in",
    "credentials",
    "sha256",
    "elapsed_ms",
    "error",
)
# The columns of a CSV written before the reason column: --resume goes on appending rows in them.
EARLIER_CSV_FIELDS = tuple(name for name in SUMMARY_FIELDS if name != "reason")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan", help="analyse images and videos", description="Score every face in images and videos."
    )
    parser.add_argument(
        "paths", nargs="*", type=given_path, metavar="PATH", help="files or folders (images and videos mixed)"
    )
    parser.add_argument(
        "--files-from",
        type=lambda text: str(given_path(text)),  # an empty one refused as the other paths are
        metavar="LIST",
        help="also scan the paths listed in this file, one per line ('-': standard input, e.g. from find)",
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    progress_argument(parser)
    most = MAX_VIDEO_FRAMES  # the API's bound, so both accept the same requests
    parser.add_argument(
        "--frames",
        type=int_up_to(most),
        default=DEFAULT_VIDEO_FRAMES,
        help=f"frames sampled per video, 1 to {most} (default {DEFAULT_VIDEO_FRAMES})",
    )
    parser.add_argument(
        "--start",
        type=video_time,
        default=0.0,
        metavar="TIME",
        help="analyse videos from this time on (seconds, m:ss or h:mm:ss; default: their start)",
    )
    parser.add_argument(
        "--end",
        type=video_time,
        default=None,
        metavar="TIME",
        help="analyse videos up to this time (default: their end); with --start, a long video is analysed a part at a time",
    )
    parser.add_argument(
        "--format", choices=("table", "json", "jsonl", "csv"), default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "--out",
        type=given_path,
        help="write results here instead of standard output (jsonl and csv: row by row, as files finish)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="with --out in jsonl or csv: skip files already in it and append the rest"
    )
    parser.add_argument(
        "--watch",
        type=watch_interval,
        metavar="SECONDS",
        help="with --format jsonl or csv: after the scan, look for new files every SECONDS and scan each once it "
        "has finished arriving (and again if it changes), until Ctrl-C",
    )
    model_argument(parser)
    trust_anchors_argument(parser)
    parser.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="the face-swap score's threshold (default: the model card's); the inconclusive band moves with it, "
        "keeping its distances below and above, and still reaches down to even odds (50%%). A synthetic-face score "
        "keeps its card's threshold and band",
    )
    parser.add_argument(
        "--min-face-size",
        type=positive_int,
        default=20,
        help="ignore faces smaller than this (pixels; default %(default)s)",
    )
    parser.add_argument(
        "--html",
        type=given_path,
        metavar="FILE",
        help="also write one self-contained page of the results: the most suspicious files first, with their "
        "faces, heatmaps and, for videos, each person's scores over time",
    )
    parser.add_argument(
        "--heatmaps",
        type=given_path,
        metavar="DIR",
        help="write heatmap overlay PNGs here: one per face of an image, one per face track of a video (its most suspicious frame)",
    )
    engine_arguments(
        parser,
        workers_help="files in parallel: local worker processes, one model each (default 1: in this process); "
        "with --engine ray, files in flight on the cluster (default: twice its CPUs)",
    )
    parser.set_defaults(run=run)


STREAMED_FORMATS = ("jsonl", "csv")


def _summary(row, fields: tuple[str, ...] = SUMMARY_FIELDS) -> dict:
    return {name: getattr(row, name) for name in fields}


def _json_row(row) -> dict:
    """A row as JSON: its own empty fields left out (an ok row has no error), its result whole, nulls and
    all, as the Python API and the REST API give it (its analysed.part, metadata.camera... were missing)."""
    return {name: value for name, value in row.model_dump(mode="json").items() if value is not None}


# A spreadsheet runs a cell that starts so as a formula: a file named "=HYPERLINK(...).jpg" would run. Such text
# is written after a quote, as the page's list writes it; text starting with a quote gets one more, so that
# --resume reads every name back as it was.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def _as_text_cell(value):
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def _from_text_cell(text: str | None) -> str | None:
    return text[1:] if text and text.startswith("'") else text


def render_row(row, fmt: str, fields: tuple[str, ...] = SUMMARY_FIELDS) -> str:
    """One row of a streamed format (jsonl, csv), with its newline; `fields`: a CSV's columns (a resumed one's)."""
    if fmt == "jsonl":
        return json.dumps(_json_row(row), separators=(",", ":")) + "\n"
    buffer = io.StringIO()
    cells = {k: _as_text_cell(v) for k, v in _summary(row, fields).items()}
    csv.DictWriter(buffer, fieldnames=fields).writerow(cells)
    return buffer.getvalue()


def csv_header(fields: tuple[str, ...] = SUMMARY_FIELDS) -> str:
    return ",".join(fields) + "\r\n"  # as csv.DictWriter.writeheader writes it


def csv_fields(out: Path) -> tuple[str, ...]:
    """The columns rows are appended in to a CSV --out that --resume continues (`finished_rows` has read it):
    an earlier version's without the reason column keeps its own, so that it stays one table."""
    if not out.is_file():
        return SUMMARY_FIELDS
    with open(out, "rb") as handle:
        first = handle.readline()
    return EARLIER_CSV_FIELDS if first == csv_header(EARLIER_CSV_FIELDS).encode() else SUMMARY_FIELDS


def render(rows: list, fmt: str, has_synthetic: bool) -> str:
    """The formats written once the scan is over: json (one array) and table (column widths).
    `has_synthetic`: the model gives the synthetic-face score."""
    if fmt == "json":
        return json.dumps([_json_row(row) for row in rows], indent=2) + "\n"
    return _table(rows, has_synthetic)


def finished_rows(out: Path, fmt: str) -> dict[str, ScanRow]:
    """path -> the summary of each row already in a streamed output file (its figures, not its result). A
    last line cut short (the scan was killed mid-write) is cut off the file, so that its file is scanned
    again: once the rows before it are read, so that a file refused is left as it was (a photo named as
    --out lost its last bytes to the refusal)."""
    from deepshield.errors import DeepShieldError
    from deepshield.inference.scan import ScanRow

    if not out.exists():
        return {}
    data = out.read_bytes()
    complete = data[: _rows_end(data, fmt)]
    text = complete.decode("utf-8", errors=NAME_BYTES)
    lines = text.splitlines()
    if (
        fmt == "csv"
        and lines
        and lines[0] not in (csv_header(f).rstrip("\r\n") for f in (SUMMARY_FIELDS, EARLIER_CSV_FIELDS))
    ):
        first = shown_name(lines[0] if len(lines[0]) <= 80 else lines[0][:80] + "...")  # a photo's bytes too
        raise DeepShieldError(
            f"{out} was written with other columns ({first}); --resume appends only to a CSV with this "
            "version's columns: scan into a new file"
        )

    def not_a_row(where: str) -> DeepShieldError:
        return DeepShieldError(
            f"{out} {where} is not a row of deepshield scan --format {fmt}; --resume appends only to such a file: "
            "scan into a new file"
        )

    done = {}
    if fmt == "csv":  # read whole: a quoted path may hold a line break (splitlines also splits at U+2028)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for record in reader:
            try:  # a line that is no row was a pydantic traceback, read as "some files failed"
                row = ScanRow.model_validate({k: _from_text_cell(v) or None for k, v in record.items()})
                done[row.path] = row
            except (ValueError, TypeError):
                raise not_a_row(f"line {reader.line_num}") from None
    else:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                done[record["path"]] = ScanRow.model_validate({k: record.get(k) for k in SUMMARY_FIELDS})
            except (ValueError, TypeError, KeyError, AttributeError):  # not JSON, not an object, not a row
                raise not_a_row(f"line {number}") from None
    if len(complete) < len(data):
        with open(out, "r+b") as handle:
            handle.truncate(len(complete))
    return done


def _rows_end(data: bytes, fmt: str) -> int:
    """Where the last whole row of a streamed output ends: after its line break, which in CSV is one outside
    quotes (a quoted path may hold line breaks: a row cut inside one read as a row cut short, and --resume
    refused the file)."""
    after_line = end = data.rfind(b"\n") + 1
    # Counted once, then less each line stepped back over: counted again from the start at each line, a quote
    # left open near the top of 100,000 rows held --resume for minutes.
    quotes = data.count(b'"', 0, end) if fmt == "csv" else 0
    while end and quotes % 2:  # quotes within a cell are doubled
        start = data.rfind(b"\n", 0, end - 1) + 1
        if b"\r\n" in data[start:end]:
            # Never past a row's own end (\r\n, where a name's break is \n): a quote left open further up (a
            # row cut in two by hand) cut off the rows after it.
            return after_line
        quotes -= data.count(b'"', start, end)
        end = start
    return end


def _percent(value: float | None) -> str:
    from deepshield.inference.verdict import shown_probability  # here: the card models would slow every command's start

    return "-" if value is None else shown_probability(value)


def _score(row, probability: float | None, synthetic: bool = False) -> str:
    """A row's score to the places that keep it on its side of its band's edges (49.996% read "50.0%"
    beside the note's band from 50.0%, called below it); "-" for none."""
    return "-" if probability is None else row.shown_score(probability, synthetic)


def _table(rows: list, has_synthetic: bool) -> str:
    # P(SWAP): the face-swap score ("P(FAKE)" beside an AI-generated face's "likely" call read 38.8%);
    # P(SYNTH): the synthetic-face score; DRIVER: the score that set the verdict ("-" for a model without it).
    # DECLARED: the source type the file's metadata declares, and its Content Credentials' state.
    # CAUTION: why a file's score deserves care, named (a "!" after the verdict read as emphasis, and said not which).
    from deepshield.inference.cautions import caution_words

    header = ("FILE", "KIND", "VERDICT", "CAUTION", "P(SWAP)", "P(SYNTH)", "DRIVER", "FACES", "DECLARED", "MS", "ERROR")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.path,
                row.kind or "-",
                row.verdict or "ERROR",
                ", ".join(caution_words(row.cautions)) or "-",
                _score(row, row.probability),
                _score(row, row.synthetic_probability, synthetic=True),
                (row.verdict_driver or "-") if has_synthetic else "-",
                "-" if row.faces is None else str(row.faces),
                declared_text(row),
                "-" if row.elapsed_ms is None else f"{row.elapsed_ms:.0f}",
                row.error or "",
            )
        )
    table = "".join(line + "\n" for line in aligned(lines))
    declares = any(row.declared_source or row.credentials for row in rows)
    terms = next((row.result for row in rows if row.result is not None), None)
    cautioned = any(row.cautions for row in rows)
    return table + "\n" + table_note(has_synthetic, declares, terms, cautioned)


def table_note(has_synthetic: bool = False, declares: bool = False, terms=None, cautioned: bool = False) -> str:
    """Under the table, for people: what the verdicts mean (`terms`: a result's thresholds and bands, said in
    numbers), what the model does not judge, and the cautions marked."""
    from deepshield.inference.cautions import CAUTION_NAMES
    from deepshield.inference.results import BLIND_SPOT, scope

    band = ""
    if terms is not None:
        bands = [f"face-swap score {_percent(terms.inconclusive.low)} to {_percent(terms.inconclusive.high)}"]
        if terms.synthetic_inconclusive is not None:
            low, high = terms.synthetic_inconclusive.low, terms.synthetic_inconclusive.high
            bands.append(f"synthetic-face score {_percent(low)} to {_percent(high)}")
        band = f" ({'; '.join(bands)})"
    meaning = (
        f"no_signs_found does not prove a file authentic ({BLIND_SPOT}); inconclusive: the score behind it lies "
        "in its uncertain "
        f"band{band}, too close to call. no_face: no face was found, so nothing was checked: the CSV's reason "
        "column and --format json say where none was found and why faces go unfound."
    )
    caution = (
        f"CAUTION: take care with that file's score ({CAUTION_NAMES}): the CSV's cautions column and "
        "--format json say what was measured under each.\n"
    )
    declared = (
        "DECLARED: how the file's metadata says it was made (IPTC source type) and its Content Credentials' state "
        "(trusted, valid, invalid, unreadable): claims read from the file, not scored.\n"
    )
    return f"{meaning}\n{scope(has_synthetic)}\n" + (caution if cautioned else "") + (declared if declares else "")


class HeatmapCopies:
    """Which copy of its stem each file of a scan is (heatmap_name's `copy`): 1 for the first file of a stem,
    2 for the next (a.jpg and a.png, or dir1/a.jpg and dir2/a.jpg) and on. A file scanned again (--watch: it
    was rewritten) keeps its number, so its new heatmaps replace its old (they went by a new name, and the
    old ones stayed under the file's own). Stems are told apart whatever their case: on macOS and Windows
    Photo_face0.png and photo_face0.png are one file."""

    def __init__(self) -> None:
        self._copy: dict[str, int] = {}  # file_key -> its copy number
        self._files: collections.Counter[str] = collections.Counter()  # case-folded stem -> files of it

    def of(self, path: str) -> int:
        from deepshield.inference.scan import file_key

        key = file_key(Path(path))
        if key not in self._copy:
            stem = Path(path).stem.casefold()
            self._files[stem] += 1
            self._copy[key] = self._files[stem]
        return self._copy[key]


def write_heatmaps(row, directory: Path, copies: HeatmapCopies) -> None:
    """One overlay PNG per face of an image, or per face track of a video (its most suspicious frame),
    named by heatmap_name. Pass the same `copies` for every row of a scan."""
    from deepshield.inference.heatmap import overlay
    from deepshield.inference.scan import heatmap_name
    from deepshield.media.images import encode_png

    directory.mkdir(parents=True, exist_ok=True)
    stem, copy = Path(row.path).stem, copies.of(row.path)
    named = (
        [(heatmap_name(stem, "face", face.index, copy), face) for face in row.result.faces]
        if row.kind == "image"
        else [(heatmap_name(stem, "track", t.track_id, copy), t) for t in row.result.tracks]
    )
    for name, scored in named:
        if scored.crop is not None and scored.heatmap is not None:
            (directory / name).write_bytes(encode_png(overlay(scored.crop, scored.heatmap)))


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # --out's lock, taken once the outputs are checked (_scan)
        return _scan(args, held)


def _scan(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    from tqdm import tqdm

    from deepshield.cli.main import EXIT_OK, EXIT_SOME_FAILED
    from deepshield.engines import make_engine
    from deepshield.errors import DeepShieldError
    from deepshield.inference.runtime import bundle_dir, checked_graph, read_card
    from deepshield.inference.scan import (
        ArrivalWatch,
        ScanJob,
        collect_files,
        file_key,
        not_done,
        watch_signature,
    )
    from deepshield.inference.scan_report import PageTerms, ScanPage
    from deepshield.inference.verdict import ScoreRule
    from deepshield.locks import file_lock
    from deepshield.media.provenance import TrustAnchors
    from deepshield.media.video import VideoSpan
    from deepshield.models.card import not_calibrated

    check_engine_arguments(args)
    if args.resume and (args.out is None or args.format not in STREAMED_FORMATS):
        raise DeepShieldError("--resume needs --out and --format jsonl or csv")
    # A pipe or a device as --out (/dev/fd/1, >(gzip ...)) takes rows; it holds no rows to resume, and has
    # no folder to keep settings beside (/dev/fd/1.settings.json ended the scan in a traceback).
    out_is_file = args.out is not None and (args.out.is_file() or not args.out.exists())
    if args.resume and not out_is_file:
        raise DeepShieldError(f"--resume needs --out to be a file: {args.out} is not one")
    if not args.paths and args.files_from is None:
        raise DeepShieldError("name the files or folders to scan, or a list of them with --files-from")
    if args.watch and args.format not in STREAMED_FORMATS:
        raise DeepShieldError("--watch needs --format jsonl or csv: rows are written as files arrive")
    # The model's card and graph, checked before any file is read or --out emptied: a bad --model fails
    # at once, and what the model judges is known even when no file could be analysed.
    folder = bundle_dir(args.model)
    card = read_card(folder)
    checked_graph(folder, card)
    threshold_given = args.threshold is not None
    if not card.calibration.fitted:  # its verdicts are called with the defaults (a soup's): said once
        say(f"deepshield scan: warning: model {card.name} {card.version}: {not_calibrated(threshold_given)}")
    has_synthetic = card.synthetic is not None
    for path, flag in ((args.out, "--out"), (args.html, "--html")):
        if path is not None:
            check_output_file(path, flag)
    if args.out is not None and args.html is not None and file_key(args.out) == file_key(args.html):
        raise DeepShieldError(f"--out and --html both name {args.out}: the page would take the rows' place")
    if args.heatmaps is not None:
        check_output_folder(args.heatmaps, "--heatmaps")
    paths = list(args.paths) + ([] if args.files_from is None else listed_paths(args.files_from))
    files = collect_files(paths, args.recursive, args.heatmaps)
    scanned = {file_key(path) for path in files}
    for path, flag in ((args.out, "--out"), (args.html, "--html")):
        if path is not None and file_key(path) in scanned:  # it was scanned, then written over
            raise DeepShieldError(f"{flag} {path} is one of the files to scan: name another file for the output")
    # Until the scan ends: a second scan into the same --out (a cron job run twice, a second terminal) wrote
    # over the first's rows, or, resumed, scanned every file again (each one's row twice).
    made = out_is_file and held.enter_context(file_lock(args.out, "this scan's rows"))
    manipulation = ScoreRule.from_calibration(card.calibration, args.threshold)
    threshold = manipulation.threshold
    settings = ScanSettings(
        model=f"{card.name} {card.version}",
        threshold=threshold,
        frames=args.frames,
        start_s=args.start,
        end_s=args.end,
        min_face_size=args.min_face_size,
        folder=os.getcwd(),
    )
    earlier_folder = Path.cwd()
    earlier = {}
    fields: tuple[str, ...] = SUMMARY_FIELDS
    continuing = args.resume and out_is_file and not made  # (an --out made by its lock holds no rows)
    kept_settings = continuing and ScanSettings.path_beside(args.out).is_file()
    if continuing:  # (settings left beside an --out since deleted are not this scan's)
        # Settings first: finished_rows cuts off a last row cut short, and a file refused is left as it was.
        earlier_folder = settings.continued(args.out)
        earlier = finished_rows(args.out, args.format)
        if args.format == "csv":
            fields = csv_fields(args.out)
    page = None
    if args.html is not None:  # a resumed scan's page shows the earlier files too, from their rows
        synthetic = None if card.synthetic is None else ScoreRule.from_calibration(card.synthetic.calibration)
        page = ScanPage(
            PageTerms(
                model=f"{card.name} {card.version}",
                threshold=threshold,
                synthetic_threshold=None if synthetic is None else synthetic.threshold,
                band=manipulation.band,
                synthetic_band=None if synthetic is None else synthetic.band,
                calibrated=card.calibration.fitted,
                threshold_given=threshold_given,
            )
        )
        for row in earlier.values():
            page.add(row, earlier=str(args.out), key=file_key(earlier_folder / row.path))
    if not files and not args.watch:  # not a failure: a listing of new files is empty on a quiet day
        # A folder of sub-folders (real/ and fake/) said only 'no media files found', its media unmentioned.
        hint = " (sub-folders are looked in with -r / --recursive)" if _has_subfolders(paths, args.recursive) else ""
        say(f"deepshield scan: no media files found, nothing to scan{hint}")
        if page is not None:  # a page left from another day would stand for this scan
            page.write(args.html, "no media files found")
        if not args.resume and not made and (args.out is not None or args.format != "table"):
            # No rows, in the format's own way (a CSV's header, JSON's []): rows left in --out by another day's
            # scan stood for this one (a cron job's quiet day), and JSON on standard output was no JSON at all.
            # (An --out the lock made is left to it: it removes it, empty.)
            if args.format not in STREAMED_FORMATS:
                _write_rows(args, [], has_synthetic)
            else:
                if out_is_file:
                    settings.write_beside(args.out)
                with contextlib.ExitStack() as stack:
                    _open_stream(args, stack)
        # a resumed scan's exit status is its output file's: its earlier error rows still stand
        return EXIT_OK if all(row.status == "ok" for row in earlier.values()) else EXIT_SOME_FAILED
    # The same file however either run spelled its path, and from whichever folder it ran.
    done = {file_key(earlier_folder / path) for path in earlier}
    files = not_done(files, done)  # (a link to a file in the rows too)
    if earlier:
        say(f"deepshield scan: {numbered(len(earlier), 'file')} already in {args.out}, {len(files)} to scan")
    job = ScanJob(
        bundle=args.model,
        min_face_size=args.min_face_size,
        threshold=args.threshold,
        frames=args.frames,
        span=VideoSpan(args.start, args.end),
        trust_anchors=None if args.trust_anchors is None else TrustAnchors.load(args.trust_anchors),
        heatmaps=args.heatmaps is not None or args.html is not None,
        base_dir=os.getcwd() if args.engine == "ray" else None,  # Ray workers may run in another directory
    )
    rows = []
    # By file, its latest row's: a file a watch scanned again (a copy that stalled, then ended) counted its
    # error row too, which a resume of the same --out did not.
    statuses = {file_key(earlier_folder / path): row.status for path, row in earlier.items()}
    outcomes: dict[str, str] = {}  # this run's files, by verdict (or "failed")

    def summary() -> str:
        return outcome_line(collections.Counter(outcomes.values()))

    copies = HeatmapCopies()
    for row in earlier.values():  # a resumed scan's files keep clear of the earlier files' heatmaps
        if row.status == "ok":
            copies.of(row.path)
    with contextlib.ExitStack() as stack:
        engine = (
            stack.enter_context(make_engine(args.engine, workers=args.workers, address=args.ray_address))
            if files or args.watch
            else None
        )
        if args.format in STREAMED_FORMATS and out_is_file and not kept_settings:
            # An older scan's resumed output is checked from now on. Before --out is opened: settings that
            # could not be written (a name too long for them) left it emptied, nothing scanned.
            settings.write_beside(args.out)
        # Opened once the engine is: an engine that failed to start (a Ray cluster out of reach) emptied it.
        stream = _open_stream(args, stack) if args.format in STREAMED_FORMATS else None
        written = os.fstat(stream.fileno()) if stream is not None and out_is_file else None

        def check_out_kept() -> None:
            """Rows go to the file --out was when opened: one an editor saved meanwhile (a new file in its place,
            a row deleted to redo its file) took none of them, each lost with the old copy, without a word."""
            if written is None:
                return
            try:
                now = os.stat(args.out)
            except OSError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (written.st_dev, written.st_ino):
                raise DeepShieldError(
                    f"--out {args.out} was replaced or removed while this scan wrote it (an editor saving it, say): "
                    "its later rows would be lost with the old copy, so the scan stops here; edit it with no scan "
                    "running, and a scan with --resume goes on from its rows"
                )

        def scan_all(batch: list[Path]) -> None:
            assert engine is not None, "an engine is opened when there are files or a watch"
            for row in tqdm(
                engine.map(job, batch),
                total=len(batch),
                unit="file",
                file=sys.stderr,
                disable=True if args.no_progress else None,
            ):
                key = file_key(row.path)
                if not os.path.isabs(row.path) and earlier_folder != Path.cwd():
                    # One folder for all the rows' relative paths: the scan's, not the resume's (a third run
                    # read this run's rows from the first one's folder, and scanned their files again).
                    row = row.model_copy(update={"path": _rebased(row.path, earlier_folder)})
                if args.heatmaps is not None and row.status == "ok":
                    try:
                        write_heatmaps(row, args.heatmaps, copies)
                    except OSError as exc:  # a full disk, say: the file's row, and the other files, go on
                        say(
                            f"deepshield scan: the heatmaps of {shown_name(row.path)} were not written: "
                            f"{exc.strerror or exc}"
                        )
                if page is not None:
                    page.add(row, key=key)
                statuses[key] = row.status
                outcomes[key] = outcome_of(row)
                if stream is None:
                    rows.append(row)
                else:  # written as each file finishes: a killed scan keeps its rows
                    check_out_kept()
                    try:
                        stream.write(render_row(row, args.format, fields))
                        stream.flush()
                    except OSError as exc:  # a full disk: a pipe's reader gone (BrokenPipeError) is not this
                        if not out_is_file or isinstance(exc, BrokenPipeError):
                            raise
                        raise DeepShieldError(
                            f"cannot write --out {args.out} ({exc.strerror or exc}): the rows written are kept, "
                            "and a scan with --resume goes on from them"
                        ) from None

        # Each file as this scan found it: one that changes meanwhile (still arriving) is scanned again whole.
        taken = {file_key(path): watch_signature(path) for path in files} if args.watch else {}
        if files:
            try:
                scan_all(files)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the files done, the page said to be cut short
                if stream is None:  # json and table are written at the end: there was no row at all
                    _write_rows(args, rows, has_synthetic)
                if page is not None:
                    page.write(
                        args.html,
                        f"{summary()} · interrupted after {len(outcomes)} of {len(files)} files",
                    )
                raise
        if args.watch:
            seen = {file_key(path) for path in files} | done
            watch = ArrivalWatch(paths, args.recursive, seen, output=args.heatmaps, taken=taken)
            say(f"deepshield scan: watching for new files every {args.watch:g} s (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(args.watch)
                    check_out_kept()
                    if arrived := watch.arrived():
                        scan_all(arrived)
            except KeyboardInterrupt:  # how a watch ends: the rows are written, the summary follows
                pass
    if stream is None:
        _write_rows(args, rows, has_synthetic)
    if page is not None:
        page.write(args.html, summary())
    if files or args.watch:
        say(
            f"deepshield scan: {summary()}"
            + (f"; rows in {args.out}" if args.out else "")
            + (f"; page in {args.html}" if args.html else "")
        )
    return EXIT_OK if all(status == "ok" for status in statuses.values()) else EXIT_SOME_FAILED


class ScanSettings(StrictModel):
    """What a streamed scan's rows were scored with, kept beside its --out (`<out>.settings.json`): a
    --resume with other settings mixed two thresholds' verdicts in one file without a word, and one run
    from another folder read the relative paths as other files (each scanned again, its row twice)."""

    model: str
    threshold: float
    frames: int
    start_s: float
    end_s: float | None
    min_face_size: int
    folder: str  # where the scan ran: its rows' relative paths are read from there

    @staticmethod
    def path_beside(out: Path) -> Path:
        return out.with_name(out.name + ".settings.json")

    def write_beside(self, out: Path) -> None:
        from deepshield.data.layout import atomic_write_text
        from deepshield.errors import DeepShieldError

        beside = self.path_beside(out)
        try:
            atomic_write_text(beside, self.model_dump_json(indent=2) + "\n", clear_left=True)
        except OSError as exc:
            raise DeepShieldError(
                f"--out {out}: the scan's settings cannot be written beside it as {beside.name} ({exc.strerror or exc}): "
                "name a shorter --out, or one in a folder that can be written"
            ) from None

    def continued(self, out: Path) -> Path:
        """The folder the rows of the scan --resume continues name their files from, once its settings are
        checked against these (refused when they differ); this one's when it kept none (an older scan)."""
        from pydantic import ValidationError

        from deepshield.errors import DeepShieldError
        from deepshield.text_files import read_text

        beside = self.path_beside(out)
        if not beside.is_file():
            return Path(self.folder)
        try:
            kept = ScanSettings.model_validate_json(read_text(beside, "the scan's settings file"))
        except DeepShieldError as exc:
            raise DeepShieldError(f"{exc}: scan into a new file") from None
        except OSError as exc:
            raise DeepShieldError(f"{beside} cannot be read ({exc.strerror or exc}): scan into a new file") from None
        except ValidationError as exc:  # "(ValidationError)" named no key
            raise DeepShieldError(
                f"{beside} cannot be read ({explain(exc, ScanSettings)}): scan into a new file"
            ) from None
        changed = [
            f"{name} {getattr(kept, name)} -> {getattr(self, name)}"
            for name in ScanSettings.model_fields
            if name != "folder" and getattr(kept, name) != getattr(self, name)
        ]
        if changed:
            raise DeepShieldError(
                f"--resume continues the scan in {out} with its own settings, and these differ: {'; '.join(changed)}. "
                "Give the same options, or scan into a new file"
            )
        return Path(kept.folder)


def _rebased(path: str, folder: Path) -> str:
    """`path` (relative to this working folder) as named from `folder`: as listed, its links kept, where
    that names the same file; else through the links (text reads "sub/.." as the folder holding sub)."""
    from deepshield.inference.scan import file_key

    listed = os.path.relpath(os.path.join(os.getcwd(), path), folder)
    return (
        listed if file_key(os.path.join(folder, listed)) == file_key(path) else os.path.relpath(file_key(path), folder)
    )


def _write_rows(args: argparse.Namespace, rows: list, has_synthetic: bool) -> None:
    """The rows of a format written once the scan is over (json, table): to --out or standard output."""
    from deepshield.data.layout import write_output_text
    from deepshield.errors import DeepShieldError

    text = render(rows, args.format, has_synthetic)
    if args.out:
        try:  # whole or not at all: a full disk left it cut short, the rows before it lost
            write_output_text(args.out, text)
        except OSError as exc:  # checked before the scan, yet gone since (a full disk): keep the rows
            sys.stdout.write(text)
            raise DeepShieldError(
                f"cannot write {args.out} ({exc.strerror or exc}): the rows went to standard output"
            ) from None
    else:
        sys.stdout.write(text)


# How the table says where a declared source type stands, beside the Content Credentials' state: an unsigned
# XMP code read "digitalCapture [C2PA trusted]", as if the trusted credentials said it.
_DECLARED_PLACES = {"xmp": "XMP, unsigned", "ingredient": "a file it was made from"}


def declared_text(row) -> str:
    """`trainedAlgorithmicMedia [C2PA valid]`, `digitalCapture (XMP, unsigned) [C2PA trusted]`, or "-"."""
    place = _DECLARED_PLACES.get(row.declared_in or "")
    declared = row.declared_source and (f"{row.declared_source} ({place})" if place else row.declared_source)
    return " ".join(filter(None, [declared, row.credentials and f"[C2PA {row.credentials}]"])) or "-"


def outcome_of(row) -> str:
    """A row's outcome as the summary counts it: its verdict, one the synthetic-face score made apart (said
    within the likely manipulated), or failed."""
    if row.status != "ok" or not row.verdict:
        return "failed"
    if row.verdict == "likely_manipulated" and row.verdict_driver == "synthetic":
        return "likely_AI-generated"
    return row.verdict


def outcome_line(outcomes: collections.Counter[str]) -> str:
    """`12 files scanned: 3 likely manipulated (1 by the synthetic-face score), 2 inconclusive, 6 no signs
    found, 1 failed`, verdicts in the order of their severity and worded as the VERDICT column's: "2 likely
    AI-generated" beside a column reading likely_manipulated counted the same files under another name."""
    by_synthetic = outcomes["likely_AI-generated"]
    counts = outcomes + collections.Counter({"likely_manipulated": by_synthetic})
    order = ("likely_manipulated", "inconclusive", "no_signs_found", "no_face", "failed")
    parts = [f"{counts[key]} {key.replace('_', ' ')}" for key in order if counts[key]]
    if by_synthetic:
        parts[0] += f" ({by_synthetic} by the synthetic-face score)"
    total = sum(outcomes.values())
    if not total:  # a resumed scan with nothing new, or one interrupted before its first file ("0 files scanned: ")
        return "no new file scanned"
    return f"{numbered(total, 'file')} scanned: " + ", ".join(parts)


def _has_subfolders(paths: list[Path], recursive: bool) -> bool:
    """Whether a folder given holds folders that the scan, not recursive, did not look in."""
    for path in paths if not recursive else ():
        with contextlib.suppress(OSError):  # one that cannot be listed has its own error row
            if path.is_dir() and any(entry.is_dir() for entry in path.iterdir()):
                return True
    return False


# Names are short: 50 million characters hold hundreds of thousands of them. Read whole, a list of
# --files-from /dev/zero ran out of memory.
LIST_LIMIT_CHARACTERS = 50_000_000


def listed_paths(source: str) -> list[Path]:
    """The paths a --files-from list names, one per line (line ends only are stripped: a name may hold
    spaces), blank lines skipped; '-' reads them from standard input. A name that is not UTF-8 is read as its
    own bytes (NAME_BYTES), as Python reads standard input and a folder's names: one such name in a listing
    from find refused the whole list."""
    from deepshield.errors import DeepShieldError

    if source == "-" and sys.stdin is None:  # started with standard input closed (`<&-`)
        raise DeepShieldError("cannot read the list of files from standard input: it is closed")
    try:
        with (
            contextlib.nullcontext(sys.stdin)
            if source == "-"
            else open(source, encoding="utf-8", errors=NAME_BYTES) as stream
        ):
            text = stream.read(LIST_LIMIT_CHARACTERS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        # An OSError's reason alone: Python's "[Errno 2] No such file or directory: 'list.txt'" named it again.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DeepShieldError(f"cannot read the list of files {source}: {reason}") from None
    if len(text) > LIST_LIMIT_CHARACTERS:
        raise DeepShieldError(
            f"the list of files {source} is over {LIST_LIMIT_CHARACTERS:,} characters long: "
            "is it a list of file names, one a line?"
        )
    # A list saved as UTF-8 by Windows (Notepad, PowerShell) starts with a byte order mark: it was read as part
    # of the first name, whose file was then 'no such file'.
    return [Path(line) for line in text.removeprefix("\ufeff").splitlines() if line.strip()]


def _open_stream(args: argparse.Namespace, stack: contextlib.ExitStack):
    """Where streamed rows go: stdout, or --out (appended to with --resume), csv header first when new."""
    stream = sys.stdout if args.out is None else stack.enter_context(_rows_file(args.out, "a" if args.resume else "w"))
    if args.format == "csv" and (args.out is None or not stream.seekable() or stream.tell() == 0):
        stream.write(csv_header())
    return stream


@contextlib.contextmanager
def _rows_file(path: Path, mode: str) -> Iterator[IO[str]]:
    """--out opened for rows. Closed after a failure, it says nothing more: its close retried writing the row
    a full disk cut short, and that second failure, naming no file, took the place of the one that said why."""
    handle = open(path, mode, newline="", encoding="utf-8", errors=NAME_BYTES)  # noqa: SIM115 - closed below
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        raise
    handle.close()
