"""Real faces, detected and cropped once with the model's crop policy, with landmarks for synthesis.

Building the bank is the slow, deterministic part of training data (detection + face mesh); it is
cached as one .npz keyed by the source files and the crop policy, so runs and resumes reuse it; while it
is built, each part of it is kept, so a killed build resumes.
A bank can also be packed into one portable file (`pack_facebank`: JPEG crops) that `data.real_dirs`
names in place of folders, so a machine without the photos or MediaPipe (a GPU lease) trains on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from itertools import pairwise
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from deepshield.data.layout import atomic_write_npz
from deepshield.data.sources import media_files
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy, crop_face, crop_validity, synthetic_crop
from deepshield.locks import logged_wait, waited_lock
from deepshield.media.files import file_signature, keyed_among, source_key
from deepshield.media.suffixes import IMAGE_SUFFIXES
from deepshield.synthesis.blend import FaceSample
from deepshield.training.config import DataConfig, TrainConfig

log = logging.getLogger(__name__)
FIELDS = ("images", "keypoints", "landmarks", "valid", "groups", "paths")
BANK_FORMAT = "2"  # part of the cache key: bump when what a bank holds changes
BANK_PART_FILES = 1024  # photos per part of a bank being built (each kept as it is done)
# Written into each packed bank: bump when its layout changes (since 2: each face's source file's source_key,
# against which a benchmark is checked where the photos are not: an overlap went unseen).
PACKED_FORMAT = "3"  # 3: the keys hold the size too (a pack of 2 held the SHA-256 alone)


@dataclass(frozen=True)
class FaceBank:
    images: np.ndarray  # N x S x S x 3 uint8
    keypoints: np.ndarray  # N x 6 x 2 float32, crop pixels
    landmarks: np.ndarray  # N x 468 x 2 float32, NaN where the mesh failed
    valid: np.ndarray  # N x S x S bool: crop pixels from inside the photo (False: padding)
    groups: np.ndarray  # N identity groups (str): a split never separates one group
    paths: np.ndarray  # N source paths (str)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> FaceSample:
        landmarks = self.landmarks[index]
        return FaceSample(
            image=self.images[index],
            keypoints=self.keypoints[index],
            landmarks=None if np.isnan(landmarks).any() else landmarks,
            valid=self.valid[index],
        )

    def donor_for(self, index: int, rng: np.random.Generator) -> int:
        """Another person's face for face `index` (of another identity group): a cross blend or part paste
        is another person's face on this one, and another frame of the same video or person is not (a
        quarter of the donors of a bank of video frames were). Any other face when the bank holds one
        group alone. Needs two faces or more."""
        others = np.flatnonzero(self.groups != self.groups[index])
        if others.size:
            return int(others[rng.integers(others.size)])
        donor = int(rng.integers(len(self) - 1))
        return donor + (donor >= index)  # never the face itself

    def regrouped(self, pattern: str | None) -> FaceBank:
        """The bank with its identity groups read from its paths by `pattern` (see identity_group), then
        joined where two faces are one photo (joined_copies)."""
        named = np.array([identity_group(Path(path), pattern) for path in self.paths.tolist()], dtype=str)
        return replace(self, groups=joined_copies(named, self.images))

    def subset(self, indices: np.ndarray) -> FaceBank:
        return FaceBank(*(getattr(self, name)[indices] for name in FIELDS))

    @classmethod
    def concat(cls, banks: list[FaceBank]) -> FaceBank:
        return cls(*(np.concatenate([getattr(b, name) for b in banks]) for name in FIELDS))

    @classmethod
    def empty(cls, size: int) -> FaceBank:
        return cls(
            np.zeros((0, size, size, 3), np.uint8),
            np.zeros((0, 6, 2), np.float32),
            np.zeros((0, 468, 2), np.float32),
            np.zeros((0, size, size), bool),
            np.array([], dtype=str),
            np.array([], dtype=str),
        )

    def save(self, path: Path) -> None:
        atomic_write_npz(path, {name: getattr(self, name) for name in FIELDS}, clear_left=True)

    @classmethod
    def load(cls, path: Path) -> FaceBank:
        with np.load(path, allow_pickle=False) as data:
            return cls(*(data[name] for name in FIELDS))


# The most bits two faces' 256-bit difference hashes (crop_hash) may differ by and be one
# photo. Measured on 224 px crops of the shared real-face folders: copies under other names (16 among
# 2,370 faces, UTKFace's and portraits') differ by 0, the closest faces of different people by 25. Not
# caught: a copy saved again as JPEG (8 or 9 bits off, as near as two crops of one photo at other zooms)
# and portraits' augmented copies (mirrored, padded, zoomed: 15 to 37; a photo mirrored is cropped anew, 44
# bits from its original's crop mirrored), which would take a face embedding.
SAME_PHOTO_BITS = 3
_BANDS = 16  # exact 16-bit bands: two hashes within 15 bits share one (pigeonhole), a candidate pair


def crop_hash(crop: np.ndarray) -> np.ndarray:
    """A face crop's difference hash: 256 bits (32 bytes), whether each of 16 x 16 cells is brighter than its left."""
    grey = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits(grey[:, 1:] > grey[:, :-1])


def joined_copies(groups: np.ndarray, images: np.ndarray) -> np.ndarray:
    """`groups` with the groups of faces that are one photo (copies: crop_hash within SAME_PHOTO_BITS)
    joined (_joined): a file name the group pattern does not read is its own group, and
    copies under other names were split between training and validation (27 of 137 such clusters in the
    shared folders), inflating the validation AUC that picks the exported epoch, and were each other's
    "other person" as blend donors."""
    if len(images) < 2:
        return groups
    hashes = np.stack([crop_hash(image) for image in images])
    ones = np.array([bin(byte).count("1") for byte in range(256)], np.uint8)
    width = hashes.shape[1] // _BANDS
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for index, code in enumerate(hashes):
        for band in range(_BANDS):
            buckets.setdefault((band, code[band * width : (band + 1) * width].tobytes()), []).append(index)
    # A band most faces share tells nothing (a row of padding, all 0 bits, put every padded face in one
    # bucket: 72 s for 12,000 faces); copies share 13 of 16 bands, so one of theirs is telling.
    common = max(64, len(images) // 100)
    buckets = {key: members for key, members in buckets.items() if len(members) <= common}
    # Identical hashes are joined whatever their number (more copies than `common` filled every bucket).
    first_with: dict[bytes, int] = {}
    pairs = [(first_with.setdefault(code.tobytes(), index), index) for index, code in enumerate(hashes)]
    for index, code in enumerate(hashes):
        near = {
            other
            for band in range(_BANDS)
            for other in buckets.get((band, code[band * width : (band + 1) * width].tobytes()), ())
            if other > index
        }
        if near:
            others = np.fromiter(near, int)
            bits = ones[hashes[others] ^ code].sum(axis=1)
            pairs += [(index, other) for other in others[bits <= SAME_PHOTO_BITS].tolist()]
    return _joined(groups, pairs)


def joined_by_source(groups: np.ndarray, digests: list[str]) -> np.ndarray:
    """`groups` with the groups of faces from files of one source_key (`digests`, "" unknown) joined: across a
    folder and a packed bank, whose JPEG crops move a copy's crop_hash past SAME_PHOTO_BITS."""
    first_with: dict[str, int] = {}
    pairs = []
    for index, digest in enumerate(digests):
        if digest:
            pairs.append((first_with.setdefault(digest, index), index))
    return _joined(groups, pairs)


def _joined(groups: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """`groups` with the groups of each pair of faces joined under the first of their names: a name that
    depends on the copies alone, not on the rest of the bank, so that a group keeps its side in differently
    filtered banks (split_by_group)."""
    parent = {name: name for name in groups.tolist()}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for a, b in pairs:
        first, second = sorted((root(groups[a]), root(groups[b])))
        parent[second] = first
    return np.array([root(name) for name in groups.tolist()], dtype=groups.dtype)


def identity_group(path: Path, pattern: str | None) -> str:
    """Group id for identity-disjoint splits: the regex's first group on the file name, else the file."""
    if pattern:
        match = re.match(pattern, path.name)
        if match:
            return f"{path.parent.name}/{match.group(1)}"
    return f"{path.parent.name}/{path.stem}"


def list_images(folders: list[Path], limit_per_folder: int | None = None) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        if folder.is_file():
            raise DeepShieldError(
                f"{folder} is a file: only data.real_dirs reads packed face banks; here name a folder of images"
            )
        if not folder.is_dir():
            raise DeepShieldError(f"real-face folder {folder} does not exist")
        folder = folder.resolve()  # one cache key however the folder was spelled
        # The source readers' listing: a prepared dataset inside the folder (its crops, fakes among them) is
        # passed over, said; its crops were taken as real faces of the folder.
        found = [p for p in media_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES]
        files.extend(found[:limit_per_folder] if limit_per_folder else found)
    return files


_worker: dict = {}


def donor_files(data: DataConfig) -> list[Path]:
    """The image files data.donor_dirs gives as cross-blend donors (none without donors)."""
    folders = [data.locate(p, "donor-face folder") for p in data.donor_dirs]
    return list_images(folders, data.donor_limit_per_folder) if folders else []


def _init_pool_worker(parent: int, *initargs: Any) -> None:
    from deepshield.engines.local import exit_with_parent
    from deepshield.native_logs import quiet_process

    exit_with_parent(parent)
    quiet_process()  # a spawned worker starts with no filters: Pillow's warnings reached the terminal
    _init_worker(*initargs)


def _init_worker(policy_json: str, perturbation_spec: str | None = None, inside: bool = False) -> None:
    from deepshield.evaluation.perturb import parse_spec
    from deepshield.faces.detector import FaceDetector
    from deepshield.faces.landmarks import FaceMesher

    _worker["policy"] = CropPolicy.model_validate_json(policy_json)
    _worker["perturbation"] = parse_spec(perturbation_spec)[0] if perturbation_spec else None
    _worker["inside"] = inside
    _worker["detector"] = FaceDetector(min_face_size=24)
    _worker["mesher"] = FaceMesher()


def _process(path: Path):
    from deepshield.media.images import load_image

    try:
        image = load_image(path)
    except DeepShieldError as exc:
        return path, None, str(exc)
    if _worker["perturbation"] is not None:  # the whole photo degraded, then found and cropped as any other
        image = _worker["perturbation"].apply(image)
    faces = _worker["detector"].detect(image)
    if not faces:
        return path, None, "no face found"
    face = max(faces, key=lambda f: f.box.area)
    crop = crop_face(image, face.box, face.keypoints, _worker["policy"])
    if _worker["inside"]:  # as the synthetic-face score reads the face
        crop = synthetic_crop(image, crop, face.box, face.keypoints, _worker["policy"]) or crop
    keypoints = face.keypoints @ crop.matrix[:, :2].T + crop.matrix[:, 2]
    landmarks = _worker["mesher"].landmarks(crop.pixels)
    if landmarks is None:
        landmarks = np.full((468, 2), np.nan, np.float32)
    valid = crop_validity(image.shape, crop.matrix, crop.pixels.shape[0])
    return path, (crop.pixels, keypoints.astype(np.float32), landmarks, valid), None


def build_facebank(
    folders: list[Path],
    policy: CropPolicy,
    cache_dir: Path,
    group_pattern: str | None = None,
    workers: int = 2,
    limit_per_folder: int | None = None,
    progress: bool = True,
) -> FaceBank:
    files = list_images(folders, limit_per_folder)
    if not files:
        raise DeepShieldError(f"no images found in {', '.join(map(str, folders))}")
    return facebank_of_files(files, policy, cache_dir, group_pattern, workers, progress=progress)


def facebank_of_files(
    files: list[Path],
    policy: CropPolicy,
    cache_dir: Path,
    group_pattern: str | None = None,
    workers: int = 2,
    perturbation: str | None = None,
    inside: bool = False,
    progress: bool = True,
) -> FaceBank:
    """The bank of these image files; `perturbation` (a `deepshield.evaluation.perturb` spec with one
    value, e.g. "resize:0.35") degrades each whole photo before its face is found and cropped; `inside`:
    each face is cut as the synthetic-face score reads it (`synthetic_crop`)."""
    # Unperturbed banks of padded crops keep their cache key.
    variant = (f"\nperturbation {perturbation}" if perturbation else "") + ("\ninside" if inside else "")
    # Each file's size and modification time too: a photo replaced under its name was served its old crop.
    listing = (
        BANK_FORMAT + policy.model_dump_json() + "\n".join(f"{path} {file_signature(path)}" for path in files) + variant
    )
    key = hashlib.sha256(listing.encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"facebank-{key}.npz"
    # One build at a time: two trainings on the same photos (tune's and a second terminal's, two runs sharing
    # data.cache_dir) both built it, into one part file and one temporary name, and all but one ended in
    # FileNotFoundError. The second now waits, then reads the first's bank.
    with waited_lock(cache_dir / f"facebank-{key}.lock", waiting=logged_wait(log, f"face bank {cache}")):
        if cache.exists():
            log.info("face bank from cache %s", cache)
            # The cache key does not hold the group pattern: groups come from the paths with today's pattern.
            return FaceBank.load(cache).regrouped(group_pattern)
        # Built a part at a time, each part kept as it is done: a build killed near its end (12,110 photos
        # take many minutes) resumes from its last part instead of starting over.
        parts_dir = cache_dir / f"facebank-{key}.parts"
        parts_dir.mkdir(exist_ok=True)
        starts = range(0, len(files), BANK_PART_FILES)
        banks: list[FaceBank] = []
        with (
            ExitStack() as stack,
            tqdm(total=len(files), desc="face bank", unit="img", disable=None if progress else True) as bar,
        ):
            process: Callable[[list[Path]], Iterator[Any]] | None = None
            for number, start in enumerate(starts):
                part = parts_dir / f"{number:05d}.npz"
                chunk = files[start : start + BANK_PART_FILES]
                if part.exists():
                    banks.append(FaceBank.load(part))
                    bar.update(len(chunk))
                    continue
                if process is None:
                    process = _processor(stack, workers, policy, perturbation, inside)
                banks.append(_bank_of(process(chunk), policy.size, bar))
                banks[-1].save(part)
        bank = FaceBank.concat(banks)
        if not len(bank):
            raise DeepShieldError(f"no face was found in any of the {len(files)} images (first: {files[0]})")
        log.info("face bank: %d faces, %d images skipped", len(bank), len(files) - len(bank))
        bank = bank.regrouped(group_pattern)
        bank.save(cache)
        shutil.rmtree(parts_dir, ignore_errors=True)
        return bank


def _processor(
    stack: ExitStack, workers: int, policy: CropPolicy, perturbation: str | None, inside: bool
) -> Callable[[list[Path]], Iterator[Any]]:
    """What finds and crops a list of photos' faces: a pool of spawned workers (MediaPipe graphs must not
    be forked), or this process."""
    initargs = (policy.model_dump_json(), perturbation, inside)
    if workers > 1:
        pool = stack.enter_context(
            get_context("spawn").Pool(workers, initializer=_init_pool_worker, initargs=(os.getpid(), *initargs))
        )
        return lambda chunk: pool.imap(_process, chunk, chunksize=16)
    _init_worker(*initargs)
    return lambda chunk: map(_process, chunk)


def _bank_of(results: Iterator[Any], size: int, bar: tqdm) -> FaceBank:
    """The faces of one part's photos (groups are set when the parts are joined)."""
    kept = []
    for path, item, error in results:
        bar.update(1)
        if item is None:
            log.debug("skipped %s: %s", path, error)
            continue
        kept.append((path, item))
    if not kept:
        return FaceBank.empty(size)
    images, keypoints, landmarks, valid = (np.stack([item[field] for _, item in kept]) for field in range(4))
    paths = np.array([str(path) for path, _ in kept])
    return FaceBank(images, keypoints, landmarks, valid, groups=paths, paths=paths)  # groups: set on joining


def pack_facebank(
    bank: FaceBank, policy: CropPolicy, path: Path, quality: int = 90, known_digests: dict[str, str] | None = None
) -> int:
    """Write `bank` as one portable file: crops as JPEG at `quality`, landmarks as float16 (within an
    eighth of a pixel up to 512 px), validity masks bit-packed, with the crop policy they were cut with, and
    each face's source file's source_key (from the file, else from `known_digests`, a packed bank's; "" when
    neither has it). Returns bytes."""
    known = known_digests or {}
    digest_of = {
        source: known.get(source) or (source_key(Path(source)) if Path(source).is_file() else "")
        for source in set(bank.paths.tolist())
    }
    encoded = []
    for image in bank.images:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DeepShieldError("could not JPEG-encode a face crop")
        encoded.append(data.ravel())
    arrays = {
        "format": np.array(PACKED_FORMAT),
        "policy": np.array(policy.model_dump_json()),
        "jpeg": np.concatenate(encoded) if encoded else np.zeros(0, np.uint8),
        "offsets": np.cumsum([0] + [len(e) for e in encoded]),
        "keypoints": bank.keypoints,
        "landmarks": bank.landmarks.astype(np.float16),
        "valid": np.packbits(bank.valid, axis=-1),
        "paths": bank.paths,
        "digests": np.array([digest_of[source] for source in bank.paths.tolist()], dtype=str),
    }
    atomic_write_npz(path, arrays, compressed=True, clear_left=True)
    return path.stat().st_size


def unpack_facebank(path: Path, policy: CropPolicy, group_pattern: str | None) -> FaceBank:
    """A packed bank's faces, refused unless cut with `policy`; groups from its paths with today's pattern."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: one array, not a bank
            raise ValueError("it holds a single array")
        with loaded as data:
            if str(data["format"]) != PACKED_FORMAT:
                raise DeepShieldError(f"{path} is a packed face bank of format {data['format']}, not {PACKED_FORMAT}")
            packed_policy = CropPolicy.model_validate_json(str(data["policy"]))
            jpeg, offsets = data["jpeg"], data["offsets"]
            keypoints, landmarks, valid, paths = data["keypoints"], data["landmarks"], data["valid"], data["paths"]
    except (OSError, KeyError, ValueError) as exc:
        raise DeepShieldError(
            f"{path} is not a packed face bank (`deepshield facebank pack` writes them): {exc}"
        ) from exc
    if packed_policy != policy:
        raise DeepShieldError(
            f"packed face bank {path} was cut with {packed_policy.model_dump()}, the configuration crops with "
            f"{policy.model_dump()}: pack it again with this configuration"
        )
    images = [
        cv2.cvtColor(cv2.imdecode(jpeg[start:end], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for start, end in pairwise(offsets)
    ]
    return FaceBank(
        np.stack(images) if images else np.zeros((0, policy.size, policy.size, 3), np.uint8),
        keypoints,
        landmarks.astype(np.float32),
        np.unpackbits(valid, axis=-1, count=policy.size).astype(bool),
        groups=paths,  # read from the paths just below
        paths=paths,
    ).regrouped(group_pattern)


def packed_source_digests(data: DataConfig) -> dict[str, str]:
    """Source path -> source_key of every face in the configuration's packed banks (data.real_dirs' files)."""
    digests: dict[str, str] = {}
    for entry in (data.locate(p, "real-face folder or packed face bank") for p in data.real_dirs):
        if not entry.is_dir():
            with np.load(entry, allow_pickle=False) as packed:
                digests |= {p: d for p, d in zip(packed["paths"].tolist(), packed["digests"].tolist()) if d}
    return digests


def facebank_for(config: TrainConfig, progress: bool = True) -> FaceBank:
    """The face bank of a training configuration's real faces: its folders' (built once, then cached)
    and its packed banks', in that order."""
    policy = CropPolicy(size=config.model.input_size, scale=config.model.crop_scale)
    data = config.data
    entries = [data.locate(p, "real-face folder or packed face bank") for p in data.real_dirs]
    folders = [p for p in entries if p.is_dir()]
    packed = [p for p in entries if p not in folders]
    banks = []
    if folders:
        cache = Path(data.cache_dir)
        banks.append(
            build_facebank(
                folders, policy, cache, data.group_pattern, data.bank_workers, data.limit_per_folder, progress
            )
        )
    banks += [unpack_facebank(p, policy, data.group_pattern) for p in packed]
    bank = FaceBank.concat(banks)
    if len(banks) > 1:  # each joined its own copies; copies in two banks are joined here
        digest_of = packed_source_digests(data)
        folder_files = {Path(path) for path in bank.paths.tolist()} - {Path(path) for path in digest_of}
        digest_of |= {str(path): key for path, key in keyed_among(folder_files, set(digest_of.values())).items()}
        digests = [digest_of.get(path, "") for path in bank.paths.tolist()]
        bank = replace(bank, groups=joined_by_source(joined_copies(bank.groups, bank.images), digests))
    return bank
