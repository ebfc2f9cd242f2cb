"""A file's own metadata (deepshield.media.metadata): read for the reader, never scored."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from deepshield.media.metadata import MediaMetadata, image_metadata, video_metadata
from tests.conftest import photo_with_exif, write_video


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
def test_a_cameras_photo_says_camera_software_date_and_that_it_has_a_location(astronaut, fmt):
    assert image_metadata(photo_with_exif(astronaut, fmt)) == MediaMetadata(
        camera="Canon EOS 5D",
        software="Adobe Photoshop 25.0",
        created="2025:12:31 09:00:00",
        has_location=True,
    )


def test_a_generators_png_names_its_settings_and_a_plain_one_says_nothing(astronaut, tmp_path):
    settings = PngInfo()
    settings.add_text("parameters", "portrait photo of a woman, Steps: 30, Sampler: Euler a")
    settings.add_text("workflow", "{}")
    settings.add_text("Software", "ComfyUI")
    generated = tmp_path / "generated.png"
    Image.fromarray(astronaut).save(generated, pnginfo=settings)
    assert image_metadata(generated) == MediaMetadata(software="ComfyUI", generator_settings=["parameters", "workflow"])
    plain = io.BytesIO()
    Image.fromarray(astronaut).save(plain, "PNG")
    assert image_metadata(plain.getvalue()) == MediaMetadata()


def test_a_content_credentials_manifest_is_noticed_not_trusted(astronaut):
    jpeg = photo_with_exif(astronaut)
    # a JUMBF box labelled c2pa in an APP11 segment, right after the SOI marker
    box = b"\xff\xeb\x00\x20JP\x00\x01\x00\x00\x00\x18jumb\x00\x00\x00\x10jumdc2pa\x00\x00\x00\x00"
    assert image_metadata(jpeg[:2] + box + jpeg[2:]).content_credentials
    assert not image_metadata(jpeg).content_credentials


@pytest.mark.parametrize("damaged", [b"", b"not an image at all", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00"])
def test_unreadable_metadata_is_empty_not_an_error(damaged, tmp_path):
    assert image_metadata(damaged) == MediaMetadata()
    path = tmp_path / "broken.mp4"
    path.write_bytes(damaged)
    assert video_metadata(path) == MediaMetadata()
    assert video_metadata(tmp_path / "missing.mp4") == MediaMetadata()


def test_a_videos_container_tags_are_read(astronaut, tmp_path):
    frames = [np.roll(astronaut, 2 * i, axis=1) for i in range(4)]
    tagged = write_video(tmp_path / "tagged.mp4", frames, tags={"creation_time": "2026-01-02T03:04:05.000000Z"})
    metadata = video_metadata(tagged)
    assert metadata.software is not None and metadata.software.startswith("Lavf")  # FFmpeg's muxer signs it
    assert metadata.created == "2026-01-02T03:04:05.000000Z"
    assert not metadata.has_location and not metadata.content_credentials


def test_the_detector_reports_a_files_metadata_beside_its_scores(detector, astronaut, tmp_path):
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(photo_with_exif(astronaut))
    from_file = detector.analyze_image(jpeg, heatmaps=False)
    assert from_file.metadata is not None and from_file.metadata.camera == "Canon EOS 5D"
    from_pixels = detector.analyze_image(astronaut, heatmaps=False)
    assert from_pixels.metadata is None  # pixels carry none
    video = write_video(tmp_path / "clip.mp4", [astronaut] * 4, tags={"creation_time": "2026-01-02T03:04:05.000000Z"})
    assert detector.analyze_video(video, frames=2).metadata.created == "2026-01-02T03:04:05.000000Z"
