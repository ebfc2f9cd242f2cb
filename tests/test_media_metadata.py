"""A file's own metadata (deepshield.media.metadata): read for the reader, never scored."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from deepshield.errors import TrustAnchorsError
from deepshield.media.metadata import MediaMetadata, image_metadata, video_metadata
from deepshield.media.provenance import ContentCredentials, DeclaredSource, TrustAnchors
from tests.conftest import photo_with_exif, write_video
from tests.provenance_support import edited_from, other_root_pem, signing_identity, with_credentials


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
def test_a_cameras_photo_says_camera_software_date_and_that_it_has_a_location(astronaut, fmt):
    assert image_metadata(photo_with_exif(astronaut, fmt)) == MediaMetadata(
        camera="Canon EOS 5D",
        software="Adobe Photoshop 25.0",
        created="2025:12:31 09:00:00",
        has_location=True,
    )


def test_camera_names_in_utf16_or_with_control_characters_read_as_text(astronaut):
    exif = Image.Exif()
    exif[0x010F] = "\ufeffCanon".encode("utf-16-le")  # UTF-16 with its byte-order mark, where EXIF says ASCII
    exif[0x0110] = "EOS\n5D\x00\x00"
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG", exif=exif)
    assert image_metadata(buffer.getvalue()).camera == "Canon EOS 5D"  # it read "\xff\xfeCanon EOS\n5D"
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"  # as Canon and Nikon bodies write them
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG", exif=exif)
    assert image_metadata(buffer.getvalue()).camera == "Canon EOS R5"  # it read "Canon Canon EOS R5"


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


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a_generators_settings_in_the_exif_comment_are_named(astronaut, fmt):
    # AUTOMATIC1111 writes a JPEG's or WebP's settings into the EXIF UserComment: nothing was shown.
    settings = "portrait photo of a woman\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1"
    for comment in (b"UNICODE\x00" + settings.encode("utf-16-be"), b"ASCII\x00\x00\x00" + b"a holiday photo"):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9286] = comment
        photo = io.BytesIO()
        Image.fromarray(astronaut).save(photo, fmt, exif=exif)
        named = image_metadata(photo.getvalue()).generator_settings
        assert named == (["parameters (EXIF UserComment)"] if comment.startswith(b"UNICODE") else [])


def _xmp(source_type: str) -> bytes:
    """An XMP packet declaring an IPTC digital source type, as Midjourney's and Google's images carry one."""
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" Iptc4xmpExt:'
        b'DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/' + source_type.encode() + b'"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )


def test_content_credentials_are_read_and_verified_offline(astronaut, tmp_path):
    signed = with_credentials(photo_with_exif(astronaut), "image/jpeg")
    metadata = image_metadata(signed)
    assert metadata.camera == "Canon EOS 5D"  # the EXIF survives signing
    assert metadata.content_credentials
    assert metadata.credentials == ContentCredentials(
        state="valid",  # intact; nobody was asked to vouch for the signer
        signed_by="Imaginary Labs",
        made_with="Imaginary Diffusion 3.1",
        actions=["created"],
        source_types=["trainedAlgorithmicMedia"],
    )
    assert metadata.declared_source == DeclaredSource(
        code="trainedAlgorithmicMedia",
        meaning="Created using generative AI",
        generative_ai=True,
        declared_in="content_credentials",
    )
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signing_identity().root_pem)
    trusted = image_metadata(signed, TrustAnchors.load(anchors)).credentials
    assert trusted is not None and (trusted.state, trusted.trust_anchors) == ("trusted", "anchors.pem")
    stranger = tmp_path / "other.pem"
    stranger.write_bytes(other_root_pem())
    vouched_by_no_one = image_metadata(signed, TrustAnchors.load(stranger)).credentials
    assert vouched_by_no_one is not None
    assert (vouched_by_no_one.state, vouched_by_no_one.problems) == ("valid", [])  # untrusted is the state's to say


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("WEBP", "image/webp"), ("HEIF", "image/heif"), ("AVIF", "image/avif")]
)
def test_content_credentials_are_read_in_every_photo_format_we_read(astronaut, fmt, mime):
    photo = io.BytesIO()
    Image.fromarray(astronaut).save(photo, fmt)
    metadata = image_metadata(with_credentials(photo.getvalue(), mime))
    assert metadata.credentials is not None and metadata.credentials.state == "valid"
    assert metadata.declared_source is not None and metadata.declared_source.code == "trainedAlgorithmicMedia"


def test_a_file_made_from_a_generated_one_inherits_its_declared_source(astronaut):
    generated = with_credentials(photo_with_exif(astronaut), "image/jpeg")
    retouched = edited_from(generated, photo_with_exif(np.ascontiguousarray(astronaut[:, ::-1])))
    metadata = image_metadata(retouched)
    credentials = metadata.credentials
    assert credentials is not None and credentials.made_with == "Imaginary Editor 2.0"
    assert (credentials.actions, credentials.source_types) == (["opened", "color_adjustments"], [])
    assert (credentials.ingredients, credentials.ingredient_source_types) == (
        ["generated.jpg"],
        ["trainedAlgorithmicMedia"],
    )
    assert metadata.declared_source == DeclaredSource(
        code="trainedAlgorithmicMedia",
        meaning="Created using generative AI",
        generative_ai=True,
        declared_in="content_credentials",
        in_ingredient=True,
    )


CAMERA = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def _tampered(signed: bytes) -> bytes:
    damaged = bytearray(signed)
    damaged[-200] ^= 0xFF  # inside the entropy-coded pixels the manifest's hash covers
    return bytes(damaged)


def _jpeg_with_xmp(astronaut, code: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG", xmp=_xmp(code))
    return buffer.getvalue()


def test_a_generative_declaration_shows_whatever_else_the_file_says(astronaut):
    # An AI image's XMP said generative; signed "captured by a camera" with a throwaway certificate (then
    # edited), it read as captured by a camera: the credentials' word hid the XMP's whatever their state.
    signed = with_credentials(_jpeg_with_xmp(astronaut, "trainedAlgorithmicMedia"), "image/jpeg", CAMERA)
    for data, state in ((signed, "valid"), (_tampered(signed), "invalid")):
        metadata = image_metadata(data)
        assert metadata.credentials is not None and metadata.credentials.state == state
        assert metadata.credentials.source_types == ["digitalCapture"]
        declared = metadata.declared_source
        assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"


def test_a_source_type_of_credentials_that_fail_is_said_to_fail(astronaut):
    tampered = _tampered(with_credentials(photo_with_exif(astronaut), "image/jpeg", CAMERA))
    declared = image_metadata(tampered).declared_source
    assert declared is not None and (declared.code, declared.verified) == ("digitalCapture", False)
    assert declared.place() == "in its Content Credentials, which fail verification"
    # unsigned XMP then says more than failed credentials do; intact credentials say more than XMP
    both = with_credentials(_jpeg_with_xmp(astronaut, "digitalCreation"), "image/jpeg", CAMERA)
    assert image_metadata(_tampered(both)).declared_source.code == "digitalCreation"
    assert image_metadata(both).declared_source.code == "digitalCapture"


def test_an_ingredient_whose_credentials_fail_declares_nothing_and_is_a_problem(astronaut):
    # A tampered parent's "captured by a camera" was shown as the trusted child's declared source, no problem listed
    parent = _tampered(with_credentials(photo_with_exif(astronaut), "image/jpeg", CAMERA))
    child = edited_from(parent, photo_with_exif(np.ascontiguousarray(astronaut[:, ::-1])))
    metadata = image_metadata(child)
    credentials = metadata.credentials
    assert credentials is not None and credentials.ingredient_source_types == []
    assert any(p.startswith("ingredient generated.jpg: assertion.dataHash.mismatch") for p in credentials.problems)
    assert metadata.declared_source is None


def test_pixels_changed_after_signing_make_the_credentials_invalid(astronaut):
    signed = bytearray(with_credentials(photo_with_exif(astronaut), "image/jpeg"))
    signed[-200] ^= 0xFF  # inside the entropy-coded pixels the manifest's hash covers
    credentials = image_metadata(bytes(signed)).credentials
    assert credentials is not None and credentials.state == "invalid"
    assert any("dataHash.mismatch" in problem for problem in credentials.problems)
    assert credentials.made_with == "Imaginary Diffusion 3.1"  # what it claims is still shown


def test_a_cut_or_empty_manifest_is_unreadable_or_absent_never_an_error(astronaut):
    signed = with_credentials(photo_with_exif(astronaut), "image/jpeg")
    cut = image_metadata(signed[: len(signed) // 2]).credentials
    assert cut is not None and cut.state == "unreadable" and cut.problems
    jpeg = photo_with_exif(astronaut)
    # a JUMBF box labelled c2pa in an APP11 segment, holding no manifest
    box = b"\xff\xeb\x00\x20JP\x00\x01\x00\x00\x00\x18jumb\x00\x00\x00\x10jumdc2pa\x00\x00\x00\x00"
    empty = image_metadata(jpeg[:2] + box + jpeg[2:])
    assert not empty.content_credentials and empty.credentials is None
    rng = np.random.default_rng(0)
    for _ in range(40):  # damaged manifests: the C2PA SDK's errors stay inside read_content_credentials
        damaged = bytearray(signed)
        for position in rng.integers(0, 60_000, size=4):
            damaged[position] ^= int(rng.integers(1, 256))
        image_metadata(bytes(damaged[: int(rng.integers(1_000, len(damaged)))]))


@pytest.mark.parametrize("suffix", ["mkv", "ts"])
def test_c2pa_markers_in_a_file_the_sdk_reads_no_manifest_from_are_no_credentials(astronaut, tmp_path, suffix):
    # A Matroska or MPEG-TS file whose title holds the words: "Content Credentials: present, but it could
    # not be read" (the SDK: "type is unsupported"), of a file that can hold none.
    clip = write_video(tmp_path / f"clip.{suffix}", [astronaut[:64, :64]] * 3, tags={"title": "jumbo c2pa notes"})
    metadata = video_metadata(clip)
    assert not metadata.content_credentials and metadata.credentials is None


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_an_xmp_source_type_is_declared_unsigned(astronaut, fmt):
    buffer = io.BytesIO()
    if fmt == "PNG":  # a PNG keeps its XMP in an iTXt chunk, here compressed: read through Pillow
        chunks = PngInfo()
        chunks.add_itxt("XML:com.adobe.xmp", _xmp("trainedAlgorithmicMedia").decode(), zip=True)
        Image.fromarray(astronaut).save(buffer, fmt, pnginfo=chunks)
    else:
        Image.fromarray(astronaut).save(buffer, fmt, xmp=_xmp("trainedAlgorithmicMedia"))
    declared = image_metadata(buffer.getvalue()).declared_source
    assert declared == DeclaredSource(
        code="trainedAlgorithmicMedia",
        meaning="Created using generative AI",
        generative_ai=True,
        declared_in="xmp",
        verified=False,
    )
    camera = io.BytesIO()
    Image.fromarray(astronaut).save(camera, "JPEG", xmp=_xmp("digitalCapture"))
    captured = image_metadata(camera.getvalue()).declared_source
    assert (
        captured is not None and not captured.generative_ai and captured.meaning == "Captured by a camera or recorder"
    )


def test_a_retired_iptc_source_type_is_said_to_be_retired(astronaut):
    # "a source type IPTC had not defined when this was written", of codes IPTC defined and has retired since.
    for code, meant in (("softwareImage", "created by software"), ("digitalArt", "digital art")):
        buffer = io.BytesIO()
        Image.fromarray(astronaut).save(buffer, "JPEG", xmp=_xmp(code))
        declared = image_metadata(buffer.getvalue()).declared_source
        assert declared is not None and declared.meaning.startswith(f"a retired IPTC code: {meant}"), declared
        assert not declared.generative_ai
    unknown = io.BytesIO()
    Image.fromarray(astronaut).save(unknown, "JPEG", xmp=_xmp("inventedHere"))
    assert image_metadata(unknown.getvalue()).declared_source.meaning.startswith("a source type IPTC had not defined")


def test_xmp_is_read_from_its_place_never_from_a_comment(astronaut, tmp_path):
    # A packet pasted into a JPEG comment or a PNG text chunk was read as the file's declaration "in its XMP";
    # in an MP4, a packet in the title tag hid the real XMP box after it.
    import struct

    from PIL import PngImagePlugin

    commented = io.BytesIO()
    Image.fromarray(astronaut).save(commented, "JPEG", comment=_xmp("digitalCapture"))
    assert image_metadata(commented.getvalue()).declared_source is None
    noted = io.BytesIO()
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("Comment", _xmp("digitalCapture").decode())
    Image.fromarray(astronaut).save(noted, "PNG", pnginfo=chunks)
    assert image_metadata(noted.getvalue()).declared_source is None
    clip = write_video(
        tmp_path / "clip.mp4", [astronaut[:64, :64]] * 3, tags={"title": _xmp("digitalCapture").decode()}
    )
    data = clip.read_bytes()
    box = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC") + _xmp("trainedAlgorithmicMedia")
    clip.write_bytes(data + struct.pack(">I", 8 + len(box)) + b"uuid" + box)  # the real XMP, after the movie
    declared = video_metadata(clip).declared_source
    assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"


def test_the_source_type_is_the_propertys_value_in_each_form_xmp_writes(astronaut):
    # A description quoting the generative code called a camera's capture "Created using generative AI".
    prefix = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:dc="http://purl.org'
        b'/dc/elements/1.1/">'
    )
    url = b"http://cv.iptc.org/newscodes/digitalsourcetype/"
    quoted = b"<dc:description><rdf:Alt><rdf:li>Not made with " + url + b"trainedAlgorithmicMedia</rdf:li></rdf:Alt>"
    forms = {
        "element": b"<Iptc4xmpExt:DigitalSourceType>" + url + b"digitalCapture</Iptc4xmpExt:DigitalSourceType>",
        "resource": b'<Iptc4xmpExt:DigitalSourceType rdf:resource="' + url + b'digitalCapture"/>',
    }
    for form, value in forms.items():
        buffer = io.BytesIO()
        xmp = prefix + value + quoted + b"</dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"
        Image.fromarray(astronaut).save(buffer, "JPEG", xmp=xmp)
        declared = image_metadata(buffer.getvalue()).declared_source
        assert declared is not None and declared.code == "digitalCapture", form
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(
        buffer, "JPEG", xmp=prefix + quoted + b"</dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    assert image_metadata(buffer.getvalue()).declared_source is None


def test_an_mp4s_xmp_is_read_after_megabytes_of_media_data(astronaut, tmp_path):
    # A camera writes moov after the media data: the XMP in moov/udta was missed past the first 4 MB.
    import struct

    clip = write_video(tmp_path / "clip.mp4", [astronaut[:64, :64]] * 3)
    data = clip.read_bytes()
    ftyp_end = struct.unpack(">I", data[:4])[0]
    filler = struct.pack(">I", 8 + 5_000_000) + b"free" + bytes(5_000_000)
    xmp = _xmp("trainedAlgorithmicMedia")
    udta = struct.pack(">I", 16 + len(xmp)) + b"udta" + struct.pack(">I", 8 + len(xmp)) + b"XMP_" + xmp
    moov = struct.pack(">I", 8 + len(udta)) + b"moov" + udta  # a second moov: only its udta is read here
    clip.write_bytes(data[:ftyp_end] + filler + moov + data[ftyp_end:])
    declared = video_metadata(clip).declared_source
    assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"


@pytest.mark.parametrize("suffix", ["mkv", "webm", "avi"])
def test_a_videos_xmp_is_read_from_its_place_never_from_a_title(astronaut, tmp_path, suffix):
    # A Matroska, WebM or AVI file's first 4 MB were searched for a packet: one in its title tag was
    # declared "in its XMP metadata"; an AVI's own (its _PMX chunk, after the media data) went unread.
    import struct

    codec = {"mkv": "libx264", "webm": "libvpx-vp9", "avi": "mpeg4"}[suffix]
    xmp = _xmp("trainedAlgorithmicMedia")
    clip = write_video(
        tmp_path / f"clip.{suffix}", [astronaut[:64, :64]] * 3, codec=codec, tags={"title": xmp.decode()}
    )
    assert video_metadata(clip).declared_source is None
    if suffix == "avi":
        data = clip.read_bytes()
        chunks = struct.pack("<4sI", b"JUNK", 5_000_000) + bytes(5_000_000)
        chunks += struct.pack("<4sI", b"_PMX", len(xmp)) + xmp + b"\0" * (len(xmp) & 1)
        clip.write_bytes(b"RIFF" + struct.pack("<I", len(data) - 8 + len(chunks)) + data[8:] + chunks)
        declared = video_metadata(clip).declared_source
        assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"


def test_a_gifs_xmp_is_declared_from_its_place(astronaut):
    # Pillow does not read a GIF's XMP (its "XMP DataXMP" application extension): a GIF declaring
    # generative AI declared nothing.
    frames = [Image.fromarray(np.roll(astronaut[:64, :64], 8 * i, axis=1)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], loop=0, comment=_xmp("digitalCapture"))
    plain = buffer.getvalue()
    assert image_metadata(plain).declared_source is None  # a packet in a comment declares nothing
    trailer = bytes([1, *range(255, -1, -1), 0])  # the XMP spec's, ending the packet's sub-blocks for a decoder
    gif = plain[:-1] + b"!\xff\x0bXMP DataXMP" + _xmp("trainedAlgorithmicMedia") + trailer + plain[-1:]
    declared = image_metadata(gif).declared_source
    assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"
    for end in range(0, len(gif), 97):  # a cut GIF: no error
        image_metadata(gif[:end])


def test_a_png_with_a_large_text_chunk_is_a_photo_with_settings(astronaut, tmp_path):
    # Pillow stops at 1 MB of inflated text: a ComfyUI-sized workflow made the photo "corrupt".
    from deepshield.media.images import decode_image

    settings = PngInfo()
    settings.add_text("workflow", "{" + " " * 2_000_000 + "}", zip=True)
    path = tmp_path / "generated.png"
    Image.fromarray(astronaut).save(path, pnginfo=settings)
    assert image_metadata(path).generator_settings == ["workflow"]
    assert decode_image(path).pixels.shape == astronaut.shape


def test_trust_anchors_that_cannot_serve_are_refused_by_name(tmp_path):
    with pytest.raises(TrustAnchorsError, match=r"missing\.pem"):
        TrustAnchors.load(tmp_path / "missing.pem")
    # /dev/zero was read until memory ran out (a MemoryError traceback), a FIFO waited for a writer for good
    with pytest.raises(TrustAnchorsError, match=r"/dev/zero: not a regular file: a character device"):
        TrustAnchors.load("/dev/zero")
    os.mkfifo(tmp_path / "fifo.pem")
    with pytest.raises(TrustAnchorsError, match=r"fifo\.pem: not a regular file: a FIFO"):
        TrustAnchors.load(tmp_path / "fifo.pem")
    with open(tmp_path / "huge.pem", "wb") as huge:
        huge.truncate(64 << 20)  # sparse: no disk used
    with pytest.raises(TrustAnchorsError, match=r"huge\.pem are over 16 MB"):
        TrustAnchors.load(tmp_path / "huge.pem")
    not_pem = tmp_path / "notes.pem"
    not_pem.write_text("these are not certificates")
    with pytest.raises(TrustAnchorsError, match=r"notes\.pem hold no PEM certificate"):
        TrustAnchors.load(not_pem)
    # one block that is no certificate made every signed file "unreadable" (its declared source lost with it)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustAnchorsError, match=r"junk\.pem hold a certificate that cannot be read"):
        TrustAnchors.load(junk)


def test_looking_for_xmp_takes_linear_time_in_unclosed_openings():
    # a lazy regex retried from every unclosed <x:xmpmeta: 400 KB of them took 60 s (4 MB: hours)
    import time

    from deepshield.media.provenance import xmp_packet

    hostile = b"<x:xmpmeta " * 400_000
    started = time.perf_counter()
    assert xmp_packet(hostile) == b""
    assert time.perf_counter() - started < 1.0
    assert xmp_packet(b"junk<x:xmpmeta a='1'>x</x:xmpmeta>tail") == b"<x:xmpmeta a='1'>x</x:xmpmeta>"


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
    signed = tmp_path / "signed.mp4"
    signed.write_bytes(with_credentials(tagged.read_bytes(), "video/mp4"))
    credentials = video_metadata(signed).credentials
    assert credentials is not None and (credentials.state, credentials.signed_by) == ("valid", "Imaginary Labs")


def test_an_avis_software_and_date_are_read(astronaut, tmp_path):
    # An AVI keeps them in its INFO chunk (ISFT, ICRD: FFmpeg's "software" and "date"): it was "none found".
    clip = write_video(tmp_path / "clip.avi", [astronaut[:64, :64]] * 3, codec="mpeg4", tags={"date": "2024-05-06"})
    metadata = video_metadata(clip)
    assert metadata.software is not None and metadata.software.startswith("Lavf")
    assert metadata.created == "2024-05-06"


def test_a_phones_video_names_its_software_not_its_codec(astronaut, tmp_path):
    # A phone's MOV: Apple's tags, no container encoder, the track's compressor name "H.264" (FFmpeg's
    # track "encoder"), which was shown as the software instead of the iOS version the phone wrote.
    import av

    path = tmp_path / "IMG_0001.MOV"
    phone = {"com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 15", "com.apple.quicktime.software": "17.1"}  # fmt: skip
    with av.open(str(path), "w", options={"movflags": "use_metadata_tags", "fflags": "+bitexact"}) as container:
        container.metadata.update(phone)
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.metadata["encoder"] = "H.264"
        for image in [astronaut[:64, :64]] * 3:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    metadata = video_metadata(path)
    assert (metadata.camera, metadata.software) == ("Apple iPhone 15", "17.1")


def test_the_detector_reports_a_files_metadata_beside_its_scores(detector, astronaut, tmp_path):
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(photo_with_exif(astronaut))
    from_file = detector.analyze_image(jpeg, heatmaps=False)
    assert from_file.metadata is not None and from_file.metadata.camera == "Canon EOS 5D"
    from_pixels = detector.analyze_image(astronaut, heatmaps=False)
    assert from_pixels.metadata is None  # pixels carry none
    video = write_video(tmp_path / "clip.mp4", [astronaut] * 4, tags={"creation_time": "2026-01-02T03:04:05.000000Z"})
    assert detector.analyze_video(video, frames=2).metadata.created == "2026-01-02T03:04:05.000000Z"


def test_a_gps_block_without_a_position_is_no_location():
    # Cameras with location off write a GPS block holding only its version: it read as a location.
    def jpeg(gps: dict) -> bytes:
        exif = Image.Exif()
        exif.get_ifd(0x8825).update(gps)
        photo = io.BytesIO()
        Image.new("RGB", (16, 16)).save(photo, "JPEG", exif=exif)
        return photo.getvalue()

    assert not image_metadata(jpeg({0: b"\x02\x03\x00\x00"})).has_location
    position = {0: b"\x02\x03\x00\x00", 1: "N", 2: (48.0, 51.0, 0.0), 3: "E", 4: (2.0, 21.0, 0.0)}
    assert image_metadata(jpeg(position)).has_location


def test_a_png_above_the_pixel_limit_is_not_decoded_for_its_metadata(tmp_path, monkeypatch):
    # With no eXIf chunk before its pixels, Pillow decodes them all to look for one after: a 100 MP PNG the
    # analysis refuses took 0.5 s and 400 MB.
    from PIL.PngImagePlugin import PngImageFile

    big = tmp_path / "big.png"
    Image.new("L", (10_000, 10_000)).save(big, "PNG", pnginfo=_text_chunk("parameters", "steps: 20"))
    decoded = []
    monkeypatch.setattr(PngImageFile, "load", lambda self: decoded.append(self.size))
    assert image_metadata(big).generator_settings == ["parameters"] and decoded == []


def _text_chunk(key: str, value: str) -> PngInfo:
    info = PngInfo()
    info.add_text(key, value)
    return info


def test_sizes_that_round_to_a_thousand_of_a_unit_read_in_the_next():
    from deepshield.media.units import format_bytes

    assert [format_bytes(n) for n in (512, 999_499, 999_500, 1.5e6, 1e12)] == [
        "512 bytes", "999 KB", "1 MB", "1.5 MB", "1,000 GB",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "mime", "options"), [("TIFF", "image/tiff", {}), ("WEBP", "image/webp", {"lossless": True})]
)
def test_content_credentials_after_the_pixels_of_a_large_tiff_or_webp_are_read(fmt, mime, options, tmp_path):
    # The C2PA SDK writes a TIFF's or WebP's manifest after its pixels: past the first 4 MB it was missed,
    # and a signed "made by generative AI" declaration with it.
    noise = np.random.default_rng(0).integers(0, 256, (1300, 1300, 3), np.uint8)
    unsigned = io.BytesIO()
    Image.fromarray(noise).save(unsigned, fmt, **options)
    signed = with_credentials(unsigned.getvalue(), mime)
    assert signed.find(b"c2pa") > 4 * 1024 * 1024
    path = tmp_path / f"signed.{fmt.lower()}"
    path.write_bytes(signed)
    for source in (signed, path):
        metadata = image_metadata(source)
        assert metadata.content_credentials and metadata.declared_source.code == "trainedAlgorithmicMedia"


def test_content_credentials_after_the_media_data_of_a_large_avi_are_read(astronaut, tmp_path):
    # The C2PA SDK writes an AVI's manifest at its end, as a WebP's: past the first 4 MB it was missed.
    import struct

    data = write_video(tmp_path / "clip.avi", [astronaut[:64, :64]] * 3, codec="mpeg4").read_bytes()
    junk = struct.pack("<4sI", b"JUNK", 5_000_000) + bytes(5_000_000)  # megabytes of media data, in effect
    signed = with_credentials(
        b"RIFF" + struct.pack("<I", len(data) - 8 + len(junk)) + data[8:] + junk, "video/x-msvideo"
    )
    assert signed.find(b"c2pa") > 4 * 1024 * 1024
    path = tmp_path / "signed.avi"
    path.write_bytes(signed)
    metadata = video_metadata(path)
    assert metadata.credentials is not None and metadata.credentials.state == "valid"
    assert metadata.declared_source is not None and metadata.declared_source.code == "trainedAlgorithmicMedia"


@pytest.mark.parametrize(
    "value",
    [
        b"trainedAlgorithmicMedia",  # the bare code, as C2PA's reading of a digitalSourceType accepts it
        b"http://cv.iptc.org/newscodes/digitalSourceType/trainedAlgorithmicMedia",  # the path in camel case
    ],
)
def test_a_bare_or_camel_cased_source_type_is_declared(astronaut, value):
    # Neither was found: a generated image read as declaring nothing, untagged "Declares AI".
    for form in (b' Iptc4xmpExt:DigitalSourceType="' + value + b'"/>', b"><Iptc4xmpExt:DigitalSourceType>" + value
                 + b"</Iptc4xmpExt:DigitalSourceType></rdf:Description>"):  # fmt: skip
        xmp = (
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
            + form
            + b"</rdf:RDF></x:xmpmeta>"
        )
        buffer = io.BytesIO()
        Image.fromarray(astronaut).save(buffer, "JPEG", xmp=xmp)
        declared = image_metadata(buffer.getvalue()).declared_source
        assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.generative_ai


@pytest.mark.parametrize("compressed", [False, True])
def test_a_pngs_xmp_in_a_text_chunk_of_its_key_is_declared(astronaut, compressed):
    # A tEXt or zTXt chunk keyed XML:com.adobe.xmp (iTXt is the usual one) declared nothing.
    chunks = PngInfo()
    chunks.add_text("XML:com.adobe.xmp", _xmp("trainedAlgorithmicMedia").decode(), zip=compressed)
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "PNG", pnginfo=chunks)
    declared = image_metadata(buffer.getvalue()).declared_source
    assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"


def test_exif_text_in_utf8_reads_as_written(astronaut):
    # Pillow reads EXIF strings as Latin-1: UTF-8 ones (as phones and generators write) showed "DALLÂ·E 3".
    exif = Image.Exif()
    exif[0x0131], exif[0x010F], exif[0x0110] = "DALL·E 3".encode(), "Café".encode(), "Caméra".encode("latin-1")
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG", exif=exif)
    metadata = image_metadata(buffer.getvalue())
    assert metadata.software == "DALL·E 3" and metadata.camera == "Café Caméra"  # Latin-1 kept as it is


def test_content_credentials_of_a_large_avi_are_looked_for_in_its_chunks_not_its_media_data(
    astronaut, tmp_path, monkeypatch
):
    # Every RIFF file was read whole to look for a manifest's markers: a 300 MB AVI on every analysis. Its
    # chunks are walked to the SDK's `C2PA` chunk, the media data skipped by its size.
    import builtins
    import struct

    from deepshield.media import metadata
    from deepshield.media.metadata import _head, _holds_c2pa

    data = write_video(tmp_path / "clip.avi", [astronaut[:64, :64]] * 3, codec="mpeg4").read_bytes()
    junk = struct.pack("<4sI", b"JUNK", 20_000_000) + bytes(20_000_000)  # megabytes of media data, in effect
    unsigned = b"RIFF" + struct.pack("<I", len(data) - 8 + len(junk)) + data[8:] + junk
    big, plain = tmp_path / "big.avi", tmp_path / "unsigned.avi"
    big.write_bytes(with_credentials(unsigned, "video/x-msvideo"))
    plain.write_bytes(unsigned)
    heads = {big: _head(big), plain: _head(plain)}
    read = []

    class Counted:
        def __init__(self, handle):
            self._handle = handle

        def read(self, size=-1):
            block = self._handle.read(size)
            read.append(len(block))
            return block

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    opened = lambda *args: Counted(builtins.open(*args))  # noqa: E731, SIM115 - closed by Counted.__exit__
    monkeypatch.setattr(metadata, "open", opened, raising=False)
    assert _holds_c2pa(big, heads[big]) and not _holds_c2pa(plain, heads[plain])
    assert 0 < sum(read) < 100_000  # chunk headers and the manifest's first bytes, not 40 MB


def test_a_riff_chunk_claiming_more_than_the_file_holds_ends_the_walk(tmp_path):
    import struct

    from deepshield.media.metadata import _holds_c2pa

    # A chunk of 4 GB in a 40-byte file, then the file claiming 4 GB itself: neither hangs nor raises.
    bogus = b"RIFF" + struct.pack("<I", 32) + b"WEBP" + struct.pack("<4sI", b"VP8 ", 0xFFFFFFFF) + bytes(20)
    huge = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WEBP" + struct.pack("<4sI", b"C2PA", 0xFFFFFFF0) + b"jumb"
    for data in (bogus, huge):
        path = tmp_path / "bogus.webp"
        path.write_bytes(data)
        assert not _holds_c2pa(path, data) and not _holds_c2pa(data, data)
        assert image_metadata(path).credentials is None


def test_the_xmp_of_an_opendml_avi_is_read_from_the_riff_chunks_after_its_first(astronaut, tmp_path):
    # An AVI past a gigabyte (OpenDML) goes on in RIFF "AVIX" chunks after its first; the walk stopped at the
    # first's end, and a _PMX chunk after the media data of the last went unread.
    import struct

    xmp = _xmp("trainedAlgorithmicMedia")
    data = write_video(tmp_path / "clip.avi", [astronaut[:64, :64]] * 3, codec="mpeg4").read_bytes()
    frame = struct.pack("<4sI", b"00dc", 3) + b"abc\0"  # of odd size: padded
    movi = struct.pack("<4sI4s", b"LIST", 4 + len(frame), b"movi") + frame
    pmx = struct.pack("<4sI", b"_PMX", len(xmp)) + xmp + b"\0" * (len(xmp) & 1)
    avix = b"RIFF" + struct.pack("<I", 4 + len(movi) + len(pmx)) + b"AVIX" + movi + pmx
    clip = tmp_path / "opendml.avi"
    clip.write_bytes(data + avix)
    declared = video_metadata(clip).declared_source
    assert declared is not None and declared.code == "trainedAlgorithmicMedia" and declared.declared_in == "xmp"
