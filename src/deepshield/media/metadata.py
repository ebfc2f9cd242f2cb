"""What a file says about itself: camera, software, dates, location, AI-generator settings, Content
Credentials and declared source (deepshield.media.provenance). Shown beside the scores for the reader to weigh, never part of them: metadata is easily
removed or forged, so its absence proves nothing and its presence is a claim, not evidence."""

from __future__ import annotations

import io
import re
from pathlib import Path

import av
from PIL import Image
from PIL.GifImagePlugin import GifImageFile
from PIL.PngImagePlugin import PngImageFile
from pydantic import BaseModel, Field

from deepshield.media.file_text import file_text
from deepshield.media.images import ImageLimits
from deepshield.media.provenance import (
    ContentCredentials,
    DeclaredSource,
    TrustAnchors,
    bmff_xmp,
    declared_source,
    gif_xmp,
    read_content_credentials,
    riff_chunks,
    riff_xmp,
    xmp_packet,
)
from deepshield.media.sniff import image_format_name
from deepshield.media.video import picture_stream

# Text chunks that image generators write into their PNGs: AUTOMATIC1111 and Forge ("parameters"),
# ComfyUI ("prompt", "workflow"), InvokeAI ("invokeai_metadata", "sd-metadata").
GENERATOR_KEYS = ("parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata")
_EXIF_MAKE, _EXIF_MODEL, _EXIF_SOFTWARE, _EXIF_DATETIME = 0x010F, 0x0110, 0x0131, 0x0132
_EXIF_IFD, _EXIF_DATETIME_ORIGINAL, _GPS_IFD = 0x8769, 0x9003, 0x8825
# AUTOMATIC1111 and Forge write a JPEG's or WebP's settings into the EXIF UserComment (a PNG's into its
# "parameters" chunk): "<prompt> ... Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: ...".
_EXIF_USER_COMMENT = 0x9286
_GENERATOR_COMMENT = re.compile(r"\bSteps: \d+, Sampler: ")
_GPS_LATITUDE, _GPS_LONGITUDE = 2, 4
# A C2PA manifest lives in a JUMBF box labelled "c2pa" (JPEG APP11, PNG caBX, MP4 uuid box); only a file
# holding both (in its first 4 MB, where JPEG, PNG and MP4 keep it beside the XMP; anywhere in a TIFF; in
# a RIFF file's (WebP, AVI, WAV) `C2PA` chunk) is given to the C2PA SDK.
_C2PA_MARKERS = (b"jumb", b"c2pa")
_HEAD_BYTES = 4 * 1024 * 1024
# The manifest store's JUMBF box opens a `C2PA` chunk, its "jumb" and "c2pa" label in its first 40 bytes.
_C2PA_CHUNK_HEAD = 4096
_VIDEO_LOCATION_KEYS = ("location", "com.apple.quicktime.location.iso6709", "location-eng")  # tags lower-cased


class MediaMetadata(BaseModel):
    """A file's own claims about where it came from (each None or empty when the file does not say)."""

    camera: str | None = Field(None, description="the camera's make and model (EXIF)")
    software: str | None = Field(
        None, description="the software that wrote the file (EXIF or PNG Software, a video's encoder)"
    )
    created: str | None = Field(
        None, description="when the file says it was taken, made or last changed, as written in it"
    )
    has_location: bool = Field(False, description="the file carries a location (GPS); not shown here")
    generator_settings: list[str] = Field(
        default_factory=list, description="AI image-generator settings found in it (the PNG text keys)"
    )
    content_credentials: bool = Field(False, description="a C2PA Content Credentials manifest is present")
    credentials: ContentCredentials | None = Field(
        None, description="the Content Credentials as read and verified offline (None when there are none)"
    )
    declared_source: DeclaredSource | None = Field(
        None, description="how the file says it was made (IPTC digital source type), if it says"
    )


def _camera(make: object, model: object) -> str | None:
    """Make and model; the model alone where it names the make (Canon and Nikon bodies write "Canon" and
    "Canon EOS R5": shown "Canon Canon EOS R5")."""
    make_text, model_text = file_text(make), file_text(model)
    if make_text and model_text and model_text.casefold().startswith(make_text.casefold()):
        return model_text
    return " ".join(t for t in (make_text, model_text) if t) or None


def _provenance(
    source: Path | str | bytes, head: bytes, trust_anchors: TrustAnchors | None, xmp: bytes | None = None
) -> MediaMetadata:
    """What the file says of where it came from (its Content Credentials and declared source), alone.
    `xmp`: the XMP a decoder read from its place in the file (b"" when it holds none: a packet pasted into a
    comment or an EXIF text is no declaration of the file's). None: an MP4/MOV's or AVI's is read from its
    place; another file's is looked for in `head`."""
    if xmp is None:
        xmp = _container_xmp(source)
    if xmp is None:
        xmp = xmp_packet(head)
    credentials = read_content_credentials(source, trust_anchors) if _holds_c2pa(source, head) else None
    return MediaMetadata(
        content_credentials=credentials is not None,
        credentials=credentials,
        declared_source=declared_source(xmp, credentials),
    )


def image_metadata(source: Path | str | bytes, trust_anchors: TrustAnchors | None = None) -> MediaMetadata:
    """The metadata of an image file or its bytes (empty when unreadable: the pixels decide errors);
    Content Credentials signers count as trusted when `trust_anchors` vouch for them."""
    head = source[:_HEAD_BYTES] if isinstance(source, bytes) else _head(Path(source))
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
        with image:
            # A PNG without an eXIf chunk before its pixels decodes them all to look after them: not for
            # one above the pixel limit (a 100 MP PNG the analysis refuses took 400 MB here).
            after_pixels = isinstance(image, PngImageFile) and "exif" not in image.info
            too_large = image.width * image.height > ImageLimits().max_pixels
            exif = Image.Exif() if after_pixels and too_large else image.getexif()
            details = exif.get_ifd(_EXIF_IFD)
            info = dict(image.info)
            if isinstance(image, GifImageFile) and image.fp is not None:
                info["xmp"] = gif_xmp(image.fp)
    except Exception:  # noqa: BLE001 - metadata is optional; load_image reports a broken file
        return _provenance(source, head, trust_anchors)
    # A PNG's XMP is an iTXt chunk keyed "XML:com.adobe.xmp" (Pillow's "xmp"); some writers put it in a
    # tEXt or zTXt chunk of that key, which Pillow keeps under the key: it declared nothing.
    xmp = info.get("xmp") or (info.get("XML:com.adobe.xmp", b"") if isinstance(image, PngImageFile) else b"")
    provenance = _provenance(source, head, trust_anchors, xmp.encode() if isinstance(xmp, str) else bytes(xmp))
    return provenance.model_copy(
        update={
            "camera": _camera(exif.get(_EXIF_MAKE), exif.get(_EXIF_MODEL)),
            "software": file_text(exif.get(_EXIF_SOFTWARE)) or file_text(info.get("Software")),
            "created": file_text(details.get(_EXIF_DATETIME_ORIGINAL)) or file_text(exif.get(_EXIF_DATETIME)),
            # A position, not just a GPS block (some cameras write one holding only its version).
            "has_location": {_GPS_LATITUDE, _GPS_LONGITUDE} <= set(exif.get_ifd(_GPS_IFD)),
            "generator_settings": [key for key in GENERATOR_KEYS if key in info] + _comment_settings(details),
        }
    )


def _comment_settings(details: Image.Exif | dict[int, object]) -> list[str]:
    """["parameters (EXIF UserComment)"] when the EXIF comment holds an image generator's settings."""
    comment = details.get(_EXIF_USER_COMMENT)
    if not isinstance(comment, bytes):
        return []
    # Its first 8 bytes name the character code; "UNICODE" is UTF-16, of either byte order as writers differ.
    code, body = comment[:8], comment[8:]
    if code.startswith(b"UNICODE"):
        endian = "utf-16-le" if body[1:2] == b"\x00" and body[:1] != b"\x00" else "utf-16-be"
        text = body.decode(endian, "replace")
    else:
        text = body.decode("utf-8", "replace")
    return ["parameters (EXIF UserComment)"] if _GENERATOR_COMMENT.search(text) else []


def video_metadata(path: Path | str, trust_anchors: TrustAnchors | None = None) -> MediaMetadata:
    """The container's own tags: encoder, creation time, location (empty when unreadable), and its Content
    Credentials; an animated image's are an image's."""
    head = _head(Path(path))
    if image_format_name(head) is not None:
        return image_metadata(path, trust_anchors)
    # A video's XMP from its place, else none: Matroska and MPEG-TS have no place for one, and a packet in
    # a title tag was declared "in its XMP metadata".
    provenance = _provenance(path, head, trust_anchors, _container_xmp(path) or b"")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            own = {key.lower(): value for key, value in container.metadata.items()}
            picture = {key.lower(): value for key, value in picture_stream(container).metadata.items()}
    except Exception:  # noqa: BLE001 - metadata is optional; sample_frames reports a broken file
        return provenance
    tags = picture | own
    # The container's encoder (the muxer that wrote it; an AVI's INFO ISFT, FFmpeg's "software"), then
    # Apple's software tag (the iOS version a phone recorded with), then the picture's: a MOV track's is its
    # codec's compressor name, "H.264" or "HEVC" in a phone's video, and stood in for the software ("17.1")
    # the phone wrote. An AVI's date is its INFO ICRD ("date"): unread, with its ISFT, an AVI naming both
    # was "none found".
    written = own.get("encoder") or own.get("software")
    software = written or own.get("com.apple.quicktime.software") or picture.get("encoder")
    created = tags.get("creation_time") or tags.get("com.apple.quicktime.creationdate") or tags.get("date")
    return provenance.model_copy(
        update={
            "camera": _camera(tags.get("com.apple.quicktime.make"), tags.get("com.apple.quicktime.model")),
            "software": file_text(software),
            "created": file_text(created),
            "has_location": any(key in tags for key in _VIDEO_LOCATION_KEYS),
        }
    )


def _holds_c2pa(source: Path | str | bytes, head: bytes) -> bool:
    """Whether the file holds a C2PA manifest's markers: in its first _HEAD_BYTES, anywhere in a TIFF, or
    in the `C2PA` chunk of a RIFF file (WebP, AVI, WAV), where the C2PA SDK writes the manifest after the
    pixels (a signed 6 MB TIFF's was missed, and a 5 MB AVI's)."""
    if all(marker in head for marker in _C2PA_MARKERS):
        return True
    if head[:4] == b"RIFF":
        return _riff_c2pa(source)
    if image_format_name(head) != "TIFF":
        return False
    if isinstance(source, bytes):
        return all(marker in source for marker in _C2PA_MARKERS)
    found: set[bytes] = set()
    overlap = max(len(marker) for marker in _C2PA_MARKERS) - 1
    try:
        with open(source, "rb") as handle:  # in blocks: a large TIFF is not read into memory whole
            tail = b""
            while block := handle.read(_HEAD_BYTES):
                window = tail + block
                found.update(marker for marker in _C2PA_MARKERS if marker in window)
                tail = window[-overlap:]
    except OSError:
        return False
    return len(found) == len(_C2PA_MARKERS)


def _riff_c2pa(source: Path | str | bytes) -> bool:
    """Whether a RIFF file's `C2PA` chunk opens with a manifest store's markers. Its chunks are walked, not
    read: a 300 MB AVI was read whole to look for them on every analysis."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as handle:
            for kind, begin, end in riff_chunks(handle):
                if kind == b"C2PA":
                    handle.seek(begin)
                    store = handle.read(min(end - begin, _C2PA_CHUNK_HEAD))
                    return all(marker in store for marker in _C2PA_MARKERS)
    except OSError:
        return False
    return False


def _container_xmp(source: Path | str | bytes) -> bytes | None:
    """The XMP of an MP4/MOV (bmff_xmp) or an AVI (riff_xmp) file or its bytes; None when it is neither or
    cannot be read."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as handle:
            found = bmff_xmp(handle)
            return riff_xmp(handle) if found is None else found
    except OSError:
        return None


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(_HEAD_BYTES)
    except OSError:
        return b""
