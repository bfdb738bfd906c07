"""Dataset folders (dataset.csv + images + labels) and their preprocessed cache.

Every case goes through TACEResponseLib.preprocessing.prepare, the same function inference uses, then is
cropped to the body and kept as float16 image + uint8 label on the model grid (a few MB per case).
"""

import csv
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from TACEResponseLib import image_io, preprocessing
from TACEResponseLib.errors import InputError

CACHE_VERSION = 2  # 2: grid centred on the image, padding repeats the edge
# context labels (neighbouring organs: spleen, stomach and bowel, ...) join the training label map after the
# foreground: value CONTEXT_OFFSET + k for context class k (1-based)
CONTEXT_OFFSET = 2


@dataclass
class CaseRecord:
    case_id: str
    images: List[str]
    label: Optional[str]
    response: Optional[int]
    row: Dict[str, str]
    context_label: Optional[str] = None  # optional map of neighbouring organs (synthetic cohorts)


def read_dataset(dataset_dir, phases):
    """Parse DATASET/dataset.csv; image and label paths are resolved relative to DATASET."""
    dataset_dir = Path(dataset_dir)
    table = dataset_dir / "dataset.csv"
    if not table.is_file():
        raise InputError(table, "dataset table not found (expected dataset.csv in the dataset folder)")
    with open(str(table), newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        raise InputError(table, "dataset table has no rows")
    columns = ["image_" + phase for phase in phases]
    missing = [c for c in ["case_id"] + columns if c not in rows[0]]
    if missing:
        raise InputError(table, "missing column(s) {} (the model's phases are {})".format(
            ", ".join(missing), ", ".join(phases)))
    records = []
    for row in rows:
        response = (row.get("response") or "").strip()
        if response not in ("", "0", "1"):
            raise InputError(table, "case {}: response must be 1, 0 or empty, not {!r}".format(row["case_id"], response))
        label = (row.get("label") or "").strip()
        context = (row.get("context_label") or "").strip()
        records.append(CaseRecord(
            row["case_id"], [str(dataset_dir / row[c]) for c in columns], str(dataset_dir / label) if label else None,
            int(response) if response else None, row, str(dataset_dir / context) if context else None))
    return records


@dataclass
class CachedCase:
    case_id: str
    image: np.ndarray  # (channels, z, y, x) float16, normalised
    label: np.ndarray  # (z, y, x) uint8: 0 background, 1 liver, 2 tumor, > 2 context classes
    response: Optional[int]
    organ_box: Optional[tuple]  # (lo, hi) voxel corners of liver+tumor
    tumor_voxels: Optional[np.ndarray] = None  # (n, 3) indices of tumor voxels, for tumor-centred patches


def _spec_key(spec, multiple, with_context):
    text = json.dumps([CACHE_VERSION, spec.phases, spec.spacing, spec.window, int(multiple)]
                      + (["context"] if with_context else []))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_path(record, spec, cache_dir, multiple=16, with_context=False):
    """Where a case preprocessed with ``spec`` is cached (None without a cache folder)."""
    if not cache_dir:
        return None
    return Path(cache_dir) / _spec_key(spec, multiple, with_context) / (record.case_id + ".npz")


def _source_fingerprint(record, with_context):
    """Names, sizes and modification times of a case's input files (a DICOM folder's files included), hashed;
    None when one is gone. A cache entry made from other files (a cohort regenerated into the same folder) is
    rebuilt; one whose inputs are gone is still read, so a filled cache can stand in for the images."""
    paths = list(record.images) + [record.label] + ([record.context_label] if with_context else [])
    entries = []
    for path in filter(None, paths):
        root = Path(path)
        try:
            files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
            for file in files:
                stat = file.stat()
                entries.append([file.relative_to(root.parent).as_posix(), stat.st_size, stat.st_mtime_ns])
        except OSError:
            return None
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def load_case(record, spec, multiple, cache_dir=None, with_context=False):
    """Preprocess one case (or read it from the cache made with the same preprocessing settings). With
    ``with_context`` the case's context map (if any) fills the background of the label map."""
    cache_file = cache_path(record, spec, cache_dir, multiple, with_context)
    source = _source_fingerprint(record, with_context) if cache_file else None
    if cache_file and cache_file.is_file():
        with np.load(str(cache_file)) as data:
            made_from = str(data["source"]) if "source" in data.files else None
            if source is None or made_from == source:
                return _cached(record, data["image"], data["label"])
    images = [image_io.read_image(path)[0] for path in record.images]
    prepared = preprocessing.prepare(images, spec, record.images)
    if record.label:
        label = preprocessing.labels_to_grid(image_io.read_mask(record.label), prepared.grid)
    else:
        label = np.zeros(prepared.array.shape[1:], np.uint8)
    if with_context and record.context_label:
        context = preprocessing.labels_to_grid(image_io.read_mask(record.context_label), prepared.grid)
        label = np.where((label == 0) & (context > 0), context + CONTEXT_OFFSET, label).astype(np.uint8)
    volume, crop, pads = preprocessing.crop_to_body(prepared.array, spec.window, multiple)
    label = np.pad(label[crop], [(0, p) for p in pads], mode="edge")  # as the image is padded
    image = volume.astype(np.float16)
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: several processes (ranks, nodes, runs) may fill one cache at once,
        # and the rename makes whichever finishes last win with a complete file
        partial = cache_file.with_name("{}.{}-{}.partial.npz".format(cache_file.stem, os.getpid(),
                                                                     uuid.uuid4().hex[:8]))
        np.savez(str(partial), image=image, label=label, source=np.array(source or ""))
        os.replace(str(partial), str(cache_file))
    return _cached(record, image, label)


def _cached(record, image, label):
    organ = np.nonzero((label == 1) | (label == 2))
    box = None
    if organ[0].size:
        box = (tuple(int(a.min()) for a in organ), tuple(int(a.max()) + 1 for a in organ))
    tumor = np.argwhere(label == 2).astype(np.int32) if box is not None else np.zeros((0, 3), np.int32)
    return CachedCase(record.case_id, image, label, record.response, box, tumor)


def extract_patch(array, centre, size, fill):
    """A patch of ``size`` (z, y, x) centred at ``centre``, padded with ``fill`` outside the array."""
    leading = array.shape[:-3]
    out = np.full(leading + tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for c, s, length in zip(centre, size, array.shape[-3:]):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, length)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    if all(s.stop > s.start for s in src):
        out[(Ellipsis,) + tuple(dst)] = array[(Ellipsis,) + tuple(src)]
    return out
