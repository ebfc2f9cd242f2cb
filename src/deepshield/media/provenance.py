"""What a file declares about its own origin: its C2PA Content Credentials (read and verified offline by
the C2PA SDK, c2pa-python) and the IPTC digital source type in its XMP. Like all metadata these are shown
beside the scores, never part of them: most files carry neither, and sites and apps strip both."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

from pydantic import BaseModel, Field, computed_field, field_validator

from deepshield.errors import DeepShieldError, TrustAnchorsError
from deepshield.media.file_text import file_text
from deepshield.media.files import read_head

# IPTC's digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/), with IPTC's own labels.
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": "Created using generative AI",
    "compositeWithTrainedAlgorithmicMedia": "Edited using generative AI",
    "algorithmicallyEnhanced": "Enhanced by an algorithm",
    "algorithmicMedia": "Created by an algorithm (not trained on data)",
    "compositeSynthetic": "Composite including synthetic elements",
    "dataDrivenMedia": "Created by a data-driven process",
    "digitalCreation": "Created by a person with software",
    "digitalCapture": "Captured by a camera or recorder",
    "computationalCapture": "Captured with computational processing",
    "compositeCapture": "Composite of captured elements",
    "composite": "Composite of elements",
    "screenCapture": "Screen capture",
    "virtualRecording": "Recording of a virtual event",
    "negativeFilm": "Scanned from a film negative",
    "positiveFilm": "Scanned from a film positive",
    "print": "Scanned from a print",
    "minorHumanEdits": "Edited by a person (minor edits)",
    "humanEdits": "Edited by a person",
}
# Codes IPTC has since retired, still found in files written before: "IPTC had not defined" them was wrong.
RETIRED_SOURCE_TYPES = {
    "softwareImage": "a retired IPTC code: created by software",
    "digitalArt": "a retired IPTC code: digital art, created by a person with software (now digitalCreation)",
}
GENERATIVE_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
# The value of the DigitalSourceType property (an attribute, an element's text or an rdf:resource), any
# prefix: a search for the code anywhere called a camera capture generative AI because its description
# quoted the code. IPTC's URI (its path in any case: "digitalSourceType/" is written too) or the bare code
# ("trainedAlgorithmicMedia", as C2PA's own reading accepts): a bare one declared nothing.
_SOURCE_TYPE = re.compile(
    rb"DigitalSourceType(?:\s*=\s*[\"']|\s*>|\s+rdf:resource\s*=\s*[\"'])\s*"
    rb"(?:[^\"'<>\s]*?(?i:digitalsourcetype)/)?([A-Za-z]{3,60})\s*[\"'<]"
)
_XMP_OPEN, _XMP_CLOSE = b"<x:xmpmeta", b"</x:xmpmeta>"
# Offline, always: a manifest stored at a URL is not fetched, nor is a certificate's revocation status.
_OFFLINE = {"remote_manifest_fetch": False, "ocsp_fetch": False}
# Reported by `state` ("valid" rather than "trusted"), not repeated among the problems.
_UNTRUSTED = "signingCredential.untrusted"
_MOST_ANCHOR_BYTES = 16 << 20  # a trust list of every web root is a few hundred KB


@dataclass(frozen=True)
class TrustAnchors:
    """Root certificates whose Content Credentials signers count as trusted (e.g. the C2PA trust list,
    saved as PEM). Without them a good signature is "valid": intact, from a signer nobody vouched for."""

    pem: str
    name: str

    @classmethod
    def load(cls, path: Path | str) -> TrustAnchors:
        path = Path(path)
        try:  # a regular file only, and a bounded part of it: /dev/zero was read until memory ran out, a FIFO forever
            data = read_head(path, _MOST_ANCHOR_BYTES + 1)
        except (OSError, DeepShieldError) as exc:
            raise TrustAnchorsError(f"cannot read the trust anchors {path}: {exc}") from None
        if len(data) > _MOST_ANCHOR_BYTES:
            raise TrustAnchorsError(
                f"the trust anchors {path} are over {_MOST_ANCHOR_BYTES >> 20} MB: is it a PEM file of certificates?"
            )
        pem = data.decode("ascii", errors="replace")  # binary: then no certificate is found
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise TrustAnchorsError(f"the trust anchors {path} hold no PEM certificate (-----BEGIN CERTIFICATE-----)")
        # Every block is read here: one the SDK cannot parse made every signed file "unreadable", its
        # declared source lost with it.
        from cryptography import x509

        try:
            x509.load_pem_x509_certificates(pem.encode("ascii"))
        except ValueError as exc:
            raise TrustAnchorsError(f"the trust anchors {path} hold a certificate that cannot be read: {exc}") from None
        return cls(pem=pem, name=path.name)


class DeclaredSource(BaseModel):
    """How the file says its content was made: an IPTC digital source type."""

    code: str = Field(description="IPTC digital source type, e.g. trainedAlgorithmicMedia")
    meaning: str = Field(description="IPTC's label for it, e.g. 'Created using generative AI'")
    generative_ai: bool = Field(description="the code says generative AI made or edited the content")
    declared_in: Literal["content_credentials", "xmp"] = Field(
        description="where it is declared: the Content Credentials (signed) or the XMP metadata (unsigned)"
    )
    in_ingredient: bool = Field(
        False, description="declared by a file this one was made from (an ingredient in its Content Credentials)"
    )
    verified: bool = Field(
        True, description="declared in Content Credentials that verify (trusted or valid); false for XMP or failed ones"
    )

    def place(self) -> str:
        """Where it is declared, in words, for people: "in its Content Credentials" and so on."""
        if self.declared_in == "xmp":
            return "in its XMP metadata, unsigned"
        where = (
            "in the Content Credentials of a file it was made from"
            if self.in_ingredient
            else "in its Content Credentials"
        )
        return where if self.verified else f"{where}, which fail verification"

    def row_place(self) -> str:
        """Where it is declared, in one word for a table's column (scan's `declared_in`)."""
        return "xmp" if self.declared_in == "xmp" else ("ingredient" if self.in_ingredient else "content_credentials")


# "the file is as X signed it" was read as the picture being true: a signature vouches for the bytes and who
# signed them, and a generated or staged picture can carry one.
SIGNED_IS_NOT_TRUE = "a valid signature says nothing about whether what the file shows is real"


class ContentCredentials(BaseModel):
    """A file's C2PA manifest as the C2PA SDK read and verified it, offline."""

    state: Literal["trusted", "valid", "invalid", "unreadable"] = Field(
        description="trusted: intact and signed by a holder of the trust anchors; valid: intact, the signer "
        "not vouched for; invalid: the file changed after signing or the signature fails; unreadable: the "
        "manifest could not be read"
    )
    trust_anchors: str | None = Field(None, description="the trust anchors the signer was checked against")
    signed_by: str | None = Field(None, description="the signing certificate's organisation (or common name)")
    signed_at: str | None = Field(None, description="when it was signed, if a time-stamp authority says so")
    made_with: str | None = Field(None, description="the software that wrote the manifest (claim generator)")
    actions: list[str] = Field(default_factory=list, description="what the manifest says was done, in order")
    source_types: list[str] = Field(default_factory=list, description="IPTC digital source types its actions name")
    ingredients: list[str] = Field(default_factory=list, description="the files it says it was made from (titles)")
    ingredient_source_types: list[str] = Field(
        default_factory=list, description="IPTC digital source types the ingredients' own manifests name, at any depth"
    )
    problems: list[str] = Field(default_factory=list, description="why it is invalid or unreadable, as the SDK says")

    # Every field is the file's own text (the SDK's problems quote it too): one printable line each.
    @field_validator("signed_by", "signed_at", "made_with", mode="before")
    @classmethod
    def _one_line(cls, value: object) -> str | None:
        return file_text(value)

    @field_validator("actions", "source_types", "ingredients", "ingredient_source_types", "problems", mode="before")
    @classmethod
    def _one_line_each(cls, values: list[object]) -> list[str]:
        return [text for text in (file_text(value, 300) for value in values) if text]

    def signer(self) -> str | None:
        """Who signed, in words: a name no trust list vouches for is the certificate's own word (anyone can
        make a certificate naming a newsroom)."""
        if self.signed_by is None or self.state == "trusted":
            return self.signed_by
        return f"{self.signed_by} (its certificate's own word: not vouched for)"

    @computed_field(  # type: ignore[prop-decorator]
        description="the state in words, for people, as inspect says it"
    )
    @property
    def state_text(self) -> str:
        """The state in words, as the page says it: "valid against a trust list" read as a pass when the
        list does not vouch for the signer."""
        named = f"a certificate naming itself \u201c{self.signed_by}\u201d" if self.signed_by else "its signer"
        said = {
            "trusted": f"signature trusted: the file is as {self.signed_by or 'the signer'} signed it, "
            f"and {self.trust_anchors} vouch for the signer",
            "valid": f"signature valid: the file is as {named} signed it, but {self.trust_anchors} do not vouch for it"
            if self.trust_anchors
            else f"signature valid: the file is as {named} signed it; no trust list was given to check who that is",
            "invalid": "signature invalid: the file changed after it was signed, or the signature does not hold",
            "unreadable": "present, but it could not be read",
        }[self.state]
        return f"{said}; {SIGNED_IS_NOT_TRUE}" if self.state in ("trusted", "valid") else said


def read_content_credentials(
    source: Path | str | bytes, trust_anchors: TrustAnchors | None = None
) -> ContentCredentials | None:
    """The active manifest of a file or its bytes, verified; None when there is none."""
    import c2pa  # here: the SDK's native library costs every process ~60 ms, and few files carry a manifest

    verify: dict[str, Any] = {**_OFFLINE, "verify_trust": trust_anchors is not None}
    settings: dict[str, Any] = {"verify": verify}
    if trust_anchors is not None:
        settings["trust"] = {"trust_anchors": trust_anchors.pem}
    anchors = None if trust_anchors is None else trust_anchors.name
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError:
        return None
    try:
        with (
            stream,
            c2pa.Reader("application/octet-stream", stream, context=c2pa.Context.from_dict(settings)) as reader,
        ):
            store = json.loads(reader.json())
    except (c2pa.C2paError.ManifestNotFound, c2pa.C2paError.NotSupported):
        # NotSupported: a kind of file the SDK reads no manifest from (Matroska, MPEG-TS, BMP), the markers
        # found being other text (a title saying "jumbo c2pa"): it was "present, but it could not be read".
        return None
    except Exception as exc:  # noqa: BLE001 - a manifest the SDK cannot read never fails the analysis
        return ContentCredentials(state="unreadable", trust_anchors=anchors, problems=[str(exc)[:300]])
    return _credentials(store, anchors)


def _credentials(store: dict[str, Any], anchors: str | None) -> ContentCredentials:
    manifests = store.get("manifests", {})
    manifest = manifests.get(store.get("active_manifest"), {})
    signature = manifest.get("signature_info") or {}
    actions = _actions(manifest)
    ancestors, failed_ingredients = _ancestors(manifests, manifest)
    inherited = [action for ancestor in ancestors for action in _actions(ancestor)]
    problems = [
        f"{status.get('code')}: {status.get('explanation')}"
        for status in store.get("validation_status", [])
        if status.get("code") != _UNTRUSTED
    ] + failed_ingredients
    state = str(store.get("validation_state", "Invalid")).lower()
    return ContentCredentials(
        state=state if state in ("trusted", "valid") else "invalid",
        trust_anchors=anchors,
        signed_by=signature.get("issuer") or signature.get("common_name"),
        signed_at=signature.get("time"),
        made_with=_made_with(manifest),
        actions=[str(a.get("action", "")).removeprefix("c2pa.") for a in actions if a.get("action")],
        source_types=_source_types(actions),
        ingredients=[str(i.get("title")) for i in manifest.get("ingredients") or [] if i.get("title")],
        ingredient_source_types=_source_types(inherited),
        problems=problems,
    )


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        action
        for assertion in manifest.get("assertions", [])
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in (assertion.get("data") or {}).get("actions", [])
    ]


def _ancestors(manifests: dict[str, Any], manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The manifests of a manifest's ingredients, theirs in turn, and so on (each once, nearest first): an
    AI image opened and retouched keeps its generator's manifest as an ingredient's. An ingredient whose own
    credentials fail (edited after signing, a bad signature; an unvouched signer is no failure) is not
    followed: what it declares is no one's word. Its failures come back as problems: the file's own
    manifest was shown "trusted" with a tampered parent's "captured by a camera"."""
    found: list[dict[str, Any]] = []
    failed: list[str] = []
    seen: set[str] = set()
    frontier = [manifest]
    while frontier:
        labels = []
        for ingredient in (i for m in frontier for i in m.get("ingredients") or []):
            results = (ingredient.get("validation_results") or {}).get("activeManifest") or {}
            failures = [f for f in results.get("failure") or [] if f.get("code") != _UNTRUSTED]
            if failures:
                title = ingredient.get("title") or "an ingredient"
                failed += [f"ingredient {title}: {f.get('code')}: {f.get('explanation')}" for f in failures]
            else:
                labels.append(ingredient.get("active_manifest"))
        frontier = [manifests[label] for label in labels if label in manifests and label not in seen]
        seen.update(label for label in labels if label)
        found.extend(frontier)
    return found, failed


def _source_types(actions: list[dict[str, Any]]) -> list[str]:
    codes = [str(a["digitalSourceType"]).rstrip("/").rsplit("/", 1)[-1] for a in actions if a.get("digitalSourceType")]
    return list(dict.fromkeys(codes))


def _made_with(manifest: dict[str, Any]) -> str | None:
    for info in manifest.get("claim_generator_info") or []:
        name = file_text(" ".join(str(info[key]) for key in ("name", "version") if info.get(key)))
        if name:
            return name
    return file_text(manifest.get("claim_generator"))


# An ISO base media file's (MP4, MOV) XMP: a top-level `uuid` box of this UUID, or moov/udta/XMP_.
_BMFF_XMP_UUID = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")


# Box headers read before giving up on a file: far more than real files hold, few enough that a file of
# empty boxes cannot hold a scan.
_MAX_BOXES = 100_000
# An XMP packet is a few kilobytes; a box claiming more is read this far.
_MAX_XMP_BYTES = 4 * 1024 * 1024


def bmff_xmp(handle: BinaryIO) -> bytes | None:
    """The XMP of an MP4/MOV file from its boxes (b"" when it holds none), None when the file is no ISO base
    media file. Read from its place, not searched for: a packet in a title tag was taken for the file's
    declaration, the real one after it never read. The boxes are walked through the whole file, their
    headers alone read: a camera writes `moov` after the media data, past any fixed head of the file."""
    handle.seek(0)
    if handle.read(8)[4:8] != b"ftyp":
        return None
    counted = 0

    def boxes(start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        nonlocal counted
        while start + 8 <= end and counted < _MAX_BOXES:
            counted += 1
            handle.seek(start)
            header_bytes = handle.read(16)
            if len(header_bytes) < 8:
                return
            size, kind = int.from_bytes(header_bytes[:4], "big"), header_bytes[4:8]
            header = 8
            if size == 1 and len(header_bytes) == 16:
                size, header = int.from_bytes(header_bytes[8:16], "big"), 16
            elif size == 0:
                size = end - start
            if size < header:
                return
            yield kind, start + header, min(start + size, end)
            start += size

    def read(begin: int, end: int) -> bytes:
        handle.seek(begin)
        return handle.read(max(0, min(end - begin, _MAX_XMP_BYTES)))

    for kind, begin, end in boxes(0, handle.seek(0, io.SEEK_END)):
        if kind == b"uuid" and read(begin, begin + 16) == _BMFF_XMP_UUID:
            return read(begin + 16, end)
        if kind == b"moov":
            for child, child_begin, child_end in boxes(begin, end):
                if child == b"udta":
                    for item, item_begin, item_end in boxes(child_begin, child_end):
                        if item == b"XMP_":
                            return read(item_begin, item_end)
    return b""


def riff_chunks(handle: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(chunk id, data start, data end) of each chunk at the top of a RIFF file ("AVI ", "WEBP", "WAVE"),
    then of the RIFF chunks following the first (an OpenDML AVI's "AVIX", each past a gigabyte); none when
    it is no RIFF file. Headers alone are read, the media data (an AVI's `movi` list) skipped by its size; a
    size past the file's end ends the walk, a data end is cut at it."""
    file_end = handle.seek(0, io.SEEK_END)
    riff_start, counted = 0, 0
    while riff_start + 12 <= file_end:
        handle.seek(riff_start)
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF":
            return
        riff_size = int.from_bytes(head[4:8], "little")
        end = min(riff_start + 8 + riff_size, file_end)
        start = riff_start + 12
        while start + 8 <= end:
            counted += 1
            if counted > _MAX_BOXES:
                return
            handle.seek(start)
            header = handle.read(8)
            if len(header) < 8:
                return
            size = int.from_bytes(header[4:8], "little")
            yield header[:4], start + 8, min(start + 8 + size, end)
            start += 8 + size + (size & 1)  # a chunk of odd size is padded to an even one
        riff_start += 8 + riff_size + (riff_size & 1)


def riff_xmp(handle: BinaryIO) -> bytes | None:
    """The XMP of an AVI file from its `_PMX` chunk (b"" when it holds none), None when the file is no AVI.
    Its chunks' headers alone are read, through the whole file: Adobe writes the chunk after the media data."""
    handle.seek(0)
    head = handle.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    for kind, begin, end in riff_chunks(handle):
        if kind == b"_PMX":
            handle.seek(begin)
            return handle.read(min(end - begin, _MAX_XMP_BYTES))
    return b""


def gif_xmp(handle: IO[bytes]) -> bytes:
    """The XMP of a GIF from its "XMP DataXMP" application extension (b"" when it holds none): Pillow does
    not read it. Its blocks are walked, the image data skipped a sub-block at a time."""
    handle.seek(0)
    head = handle.read(13)
    if len(head) < 13:
        return b""
    if head[10] & 0x80:  # a global colour table
        handle.seek(3 << ((head[10] & 7) + 1), io.SEEK_CUR)

    def skip_sub_blocks() -> bool:
        while size := handle.read(1):
            if size == b"\0":
                return True
            handle.seek(size[0], io.SEEK_CUR)
        return False

    while introducer := handle.read(1):
        if introducer == b"!":
            label = handle.read(1)
            if label == b"\xff":
                application = handle.read(12)
                if application == b"\x0bXMP DataXMP":  # the packet follows raw, then a "magic trailer"
                    return xmp_packet(handle.read(_MAX_XMP_BYTES))
                handle.seek(-len(application), io.SEEK_CUR)
            if not skip_sub_blocks():
                break
        elif introducer == b",":
            descriptor = handle.read(9)
            if len(descriptor) < 9:
                break
            if descriptor[8] & 0x80:  # a local colour table
                handle.seek(3 << ((descriptor[8] & 7) + 1), io.SEEK_CUR)
            handle.read(1)  # the LZW code size
            if not skip_sub_blocks():
                break
        else:  # the trailer ";", or bytes that are no block
            break
    return b""


def xmp_packet(head: bytes) -> bytes:
    """The first XMP packet in a file's first bytes (b"" when none): JPEG, WebP, HEIC and MP4 keep it
    uncompressed there. Two plain searches: a lazy regex retried its scan from every unclosed opening,
    and 4 MB of them held a scan or the server for hours."""
    start = head.find(_XMP_OPEN)
    end = -1 if start < 0 else head.find(_XMP_CLOSE, start)
    return b"" if end < 0 else head[start : end + len(_XMP_CLOSE)]


def declared_source(xmp: bytes, credentials: ContentCredentials | None) -> DeclaredSource | None:
    """What the file declares of its making. A generative-AI declaration wherever it is (the Content
    Credentials, the file's own then its ingredients', or the XMP): a claim worth seeing even unsigned or
    from credentials that fail. Else the Content Credentials' source type when they verify (signed, so
    preferred), then the XMP's, then that of credentials that fail (said so). The Content Credentials' word
    hid the XMP's whatever their state: an AI image signed "captured by a camera" with a throwaway
    certificate, then edited, read as captured by a camera."""
    verified = credentials is not None and credentials.state in ("trusted", "valid")
    signed: list[tuple[str, Literal["content_credentials", "xmp"], bool]] = []
    if credentials is not None:
        signed += [(code, "content_credentials", False) for code in credentials.source_types]
        signed += [(code, "content_credentials", True) for code in credentials.ingredient_source_types]
    unsigned: list[tuple[str, Literal["content_credentials", "xmp"], bool]] = [
        (m.decode("ascii"), "xmp", False) for m in _SOURCE_TYPE.findall(xmp)
    ]
    named = signed + unsigned
    generative = [n for n in named if n[0] in GENERATIVE_SOURCE_TYPES]
    chosen = next(iter(generative or (signed if verified else []) or unsigned or signed), None)
    if chosen is None:
        return None
    code, where, inherited = chosen
    return DeclaredSource(
        code=code,
        meaning=SOURCE_TYPES.get(code)
        or RETIRED_SOURCE_TYPES.get(code, "a source type IPTC had not defined when this was written"),
        generative_ai=code in GENERATIVE_SOURCE_TYPES,
        declared_in=where,
        in_ingredient=inherited,
        verified=where == "content_credentials" and verified,
    )
