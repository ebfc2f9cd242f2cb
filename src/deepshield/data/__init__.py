"""Dataset preprocessing: raw DFDC / FaceForensics++ / labelled folders / CSV -> a clean face dataset.

Modules, one job each: `sources` (readers yielding typed items), `extract` (face crops, process
pool), `records` (per-file done records for resume), `manifest` (the typed manifest and loaders),
`split` (group-aware split), `prepare` (the pipeline), `stats` (counts, plots, MLflow), `balance`
(add reals, down-sample, synthesise fakes), `layout` (paths inside a dataset folder).

Training code needs only `read_manifest(dataset_dir)` and `load_crop(record, dataset_dir)`.
"""

from deepshield.data.manifest import CropRecord, load_crop, read_manifest

__all__ = ["CropRecord", "load_crop", "read_manifest"]
