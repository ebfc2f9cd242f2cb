"""`deepshield inspect`: what files say about themselves (metadata, Content Credentials verified offline,
declared source type), without running the model: a quick provenance check."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepshield.cli.args import given_path, trust_anchors_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show what files say about themselves: metadata, Content Credentials, declared source (no model)",
        description="Read each file's own claims: camera, software, dates, AI-generator settings, its C2PA "
        "Content Credentials (verified offline) and the source type it declares. Nothing is scored.",
    )
    parser.add_argument("paths", nargs="+", type=given_path, metavar="FILE", help="images or videos")
    trust_anchors_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per file (JSON lines)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepshield.cli.main import EXIT_OK, EXIT_SOME_FAILED
    from deepshield.errors import DeepShieldError
    from deepshield.media.files import file_sha256
    from deepshield.media.frames import media_kind
    from deepshield.media.metadata import image_metadata, video_metadata
    from deepshield.media.provenance import TrustAnchors
    from deepshield.media.sniff import MediaKind

    anchors = None if args.trust_anchors is None else TrustAnchors.load(args.trust_anchors)
    failed = False
    for path in args.paths:
        sha256 = None
        try:
            sha256 = file_sha256(path)  # names a missing file, a FIFO (never opened), a link loop
            kind = media_kind(path)
        except DeepShieldError as exc:
            failed = True  # a file that could be read is named by its bytes even so, as scan's rows name it
            row = {"path": str(path), "error": str(exc)} | ({"sha256": sha256} if sha256 else {})
            print(json.dumps(row) if args.json else f"{_one_line(path)}: {exc}")
            continue
        read = video_metadata if kind is MediaKind.VIDEO else image_metadata
        metadata = read(path, anchors)
        # Decoded as scan would (metadata alone read a cut-off JPEG as a photo whose metadata was removed).
        undecodable = media_problem(path, kind)
        failed = failed or undecodable is not None
        if args.json:
            record: dict[str, object] = {
                "path": str(path),
                "kind": kind.value,
                "sha256": sha256,
                "metadata": metadata.model_dump(mode="json"),
            }
            print(json.dumps(record | ({"error": undecodable} if undecodable else {})))
        else:
            sys.stdout.write(describe(path, kind.value, sha256, metadata, undecodable))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _one_line(path: Path) -> str:
    """A file's name on one line, as scan's table shows it: a newline in it escaped, bytes that are not UTF-8
    as \\xff (a newline in a name began a line of its own, which could pass for another file's)."""
    from deepshield.media.files import shown_name
    from deepshield.one_line import one_line

    return one_line(shown_name(str(path)))


def media_problem(path: Path, kind) -> str | None:
    """Why the file cannot be analysed (corrupt, over a limit), None when it decodes."""
    from deepshield.errors import DeepShieldError
    from deepshield.media.images import decode_image
    from deepshield.media.sniff import MediaKind
    from deepshield.media.video import probe_video

    try:
        if kind is MediaKind.VIDEO:
            probe_video(path)
        else:
            decode_image(path)
    except DeepShieldError as exc:
        return str(exc)
    return None


def describe(path: Path, kind: str, sha256: str, metadata, undecodable: str | None = None) -> str:
    lines = [f"{_one_line(path)} ({kind}, SHA-256 {sha256})"]
    if undecodable:
        lines.append(f"  not readable as {kind}: {undecodable}")
    facts = [
        ("camera", metadata.camera),
        ("software", metadata.software),
        ("date in the file", metadata.created),
        ("location", "present (not shown)" if metadata.has_location else None),
        ("AI-generator settings", ", ".join(metadata.generator_settings) or None),
    ]
    source = metadata.declared_source
    if source is not None:
        facts.append(("declared source", f"{source.meaning} ({source.code}; {source.place()})"))
    credentials = metadata.credentials
    if credentials is not None:
        facts += [
            ("Content Credentials", credentials.state_text),
            ("signed by", credentials.signer()),
            ("signed at", credentials.signed_at),
            ("made with", credentials.made_with),
            ("actions", ", ".join(credentials.actions) or None),
            ("made from", ", ".join(credentials.ingredients) or None),
            ("problems", "; ".join(credentials.problems) or None),
        ]
    shown = [(name, value) for name, value in facts if value]
    if not shown:
        shown = [("metadata", "none found (sites and apps often remove it)")]
    width = max(len(name) for name, _ in shown)
    lines += [f"  {name.ljust(width)}  {value}" for name, value in shown]
    return "\n".join(lines) + "\n"
