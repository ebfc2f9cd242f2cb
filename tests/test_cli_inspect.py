"""`deepshield inspect`: what files say about themselves, without the model."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from deepshield.cli.main import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main
from tests.conftest import photo_with_exif, write_video
from tests.provenance_support import edited_from, other_root_pem, signing_identity, with_credentials


def test_inspect_reads_claims_and_credentials_of_photos_and_videos(capsys, astronaut, tmp_path):
    generated = with_credentials(photo_with_exif(astronaut), "image/jpeg")
    (tmp_path / "generated.jpg").write_bytes(generated)
    (tmp_path / "retouched.jpg").write_bytes(edited_from(generated, photo_with_exif(astronaut)))
    write_video(tmp_path / "clip.mp4", [np.roll(astronaut, i, axis=1) for i in range(3)])
    (tmp_path / "notes.jpg").write_text("not a photo")
    files = [str(tmp_path / name) for name in ("generated.jpg", "retouched.jpg", "clip.mp4", "notes.jpg")]
    assert main(["inspect", *files]) == EXIT_SOME_FAILED  # the notes are not media
    out = capsys.readouterr().out
    generated_part, retouched_part, clip_part, notes_part = out.split(str(tmp_path) + "/")[1:]
    assert generated_part.startswith(f"generated.jpg (image, SHA-256 {hashlib.sha256(generated).hexdigest()})")
    assert (
        "declared source      Created using generative AI (trainedAlgorithmicMedia; in its Content Credentials)"
        in generated_part
    )
    assert (
        "Content Credentials  signature valid: the file is as a certificate naming itself \u201cImaginary Labs\u201d "
        "signed it; no trust list was given to check who that is; a valid signature says nothing about whether "
        "what the file shows is real" in generated_part
    )
    assert "made from            generated.jpg" in retouched_part
    assert "in the Content Credentials of a file it was made from" in retouched_part
    assert clip_part.startswith("clip.mp4 (video, SHA-256 ") and "software" in clip_part
    assert notes_part.startswith("notes.jpg: unsupported file type")
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signing_identity().root_pem)
    assert main(["inspect", files[0], "--trust-anchors", str(anchors), "--json"]) == EXIT_OK
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["kind"] == "image" and row["metadata"]["credentials"]["state"] == "trusted"
    # In words in the JSON too, saying a trusted signature vouches for the bytes, not that the picture is true.
    assert row["metadata"]["credentials"]["state_text"] == (
        "signature trusted: the file is as Imaginary Labs signed it, and anchors.pem vouch for the signer; "
        "a valid signature says nothing about whether what the file shows is real"
    )
    assert row["sha256"] == hashlib.sha256(generated).hexdigest()
    (tmp_path / "empty.jpg").write_bytes(b"")  # not media, but a file: named by its bytes, as scan names it
    assert main(["inspect", str(tmp_path / "empty.jpg"), str(tmp_path / "gone.jpg"), "--json"]) == EXIT_SOME_FAILED
    empty, gone = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert empty["sha256"] == hashlib.sha256(b"").hexdigest() and "error" in empty
    assert "sha256" not in gone and "error" in gone
    stranger = tmp_path / "stranger.pem"  # a list that does not vouch for the signer: no pass (it read "valid against")
    stranger.write_bytes(other_root_pem())
    assert main(["inspect", files[0], "--trust-anchors", str(stranger)]) == EXIT_OK
    assert "signed it, but stranger.pem do not vouch for it" in capsys.readouterr().out
    assert main(["inspect", files[0], "--trust-anchors", files[2]]) == EXIT_USAGE
    assert "hold no PEM certificate" in capsys.readouterr().err


def test_exif_pillow_cannot_read_leaves_stderr_alone(astronaut, tmp_path):
    import io
    import struct
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    # EXIF whose GPS block points past the end: Pillow warned "Corrupt EXIF data" on stderr, twice.
    tiff = b"II*\x00" + struct.pack("<IHHHIII", 8, 1, 0x8825, 4, 1, 0xFFFFFFF0, 0)
    segment = b"Exif\x00\x00" + tiff
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:])
    done = subprocess.run(
        [sys.executable, "-m", "deepshield.cli.main", "inspect", str(photo)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    assert done.returncode == EXIT_OK and "metadata  none found" in done.stdout
    assert done.stderr == ""


def test_a_file_that_does_not_decode_is_said_so(capsys, astronaut, tmp_path):
    # A JPEG cut short read as a photo whose metadata was removed, exit 0; scan called it corrupt.
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo_with_exif(astronaut)[:600])
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(photo_with_exif(astronaut))
    assert main(["inspect", str(cut), str(whole)]) == EXIT_SOME_FAILED
    out = capsys.readouterr().out
    assert "  not readable as image: corrupt image: the file starts like a JPEG" in out
    assert out.count("not readable") == 1
    assert main(["inspect", str(cut), "--json"]) == EXIT_SOME_FAILED
    assert json.loads(capsys.readouterr().out)["error"].startswith("corrupt image")


def test_a_files_own_text_cannot_write_lines_or_escape_codes_to_the_terminal(capsys, astronaut, tmp_path):
    # A forged manifest's claim generator held ESC codes and a line break: printed raw, they could clear
    # the screen and print a line of the file's choosing ("Content Credentials  trusted").
    forged = with_credentials(photo_with_exif(astronaut), "image/jpeg", made_with="Evil\x1b[2J\x1b[31mTool\nfake: line")
    (tmp_path / "forged.jpg").write_bytes(forged)
    assert main(["inspect", str(tmp_path / "forged.jpg")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "  made with            Evil [2J [31mTool fake: line 3.1\n" in out
    assert not any(line.startswith("fake") for line in out.splitlines())


def test_a_files_name_is_one_line_however_it_is_spelled(capsys, astronaut, tmp_path):
    # A newline in a name began a line of its own, which could pass for another file's.
    photo = photo_with_exif(astronaut)
    (tmp_path / "a\nfake.jpg: trusted").write_bytes(photo)
    (tmp_path / "missing\r.jpg").symlink_to(tmp_path / "nowhere")
    assert (
        main(["inspect", str(tmp_path / "a\nfake.jpg: trusted"), str(tmp_path / "missing\r.jpg")]) == EXIT_SOME_FAILED
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path}/a\\nfake.jpg: trusted (image, SHA-256 ")
    assert lines[-1] == f"{tmp_path}/missing\\r.jpg: broken symbolic link"
    assert not any(line.startswith("fake") for line in lines)


def test_a_video_whose_header_is_damaged_is_named_and_the_next_file_still_read(capsys, astronaut, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, i, axis=1) for i in range(3)])
    damaged = tmp_path / "damaged.mp4"  # its media information box renamed: the stream keeps no codec
    damaged.write_bytes(clip.read_bytes().replace(b"minf", b"Xinf", 1))
    assert main(["inspect", str(damaged), str(clip)]) == EXIT_SOME_FAILED  # was an AttributeError traceback
    out = capsys.readouterr().out
    assert "not readable as video: its video stream names no codec that can be decoded (the file is damaged)" in out
    assert out.count("(video, SHA-256") == 2
