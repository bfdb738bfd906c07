"""Builders for deliberately broken or implausible inputs, written into a test's tmp folder.

Each builder takes a folder (pathlib.Path) and returns the path (str) to give the CLI. Volumes are small
(64x64x40 voxels at 3 mm: 192x192x120 mm) with HU-like content, so that a run through the network takes
about a second on a CPU. Hostile headers are written by hand, byte by byte, so that no reader "fixes"
them on the way.
"""

import gzip
import hashlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (40, 64, 64)  # z, y, x
SPACING = (3.0, 3.0, 3.0)


# ---- plausible content ------------------------------------------------------------------------------


def ct_array(shape=SHAPE, seed=0):
    """An abdomen-like int16 volume in HU: air, a body ellipse of soft tissue, a brighter 'liver', a 'spine'."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    cy, cx = shape[1] / 2.0, shape[2] / 2.0
    array = np.full(shape, -1000.0, np.float32)
    body = ((y - cy) / (0.42 * shape[1])) ** 2 + ((x - cx) / (0.46 * shape[2])) ** 2 < 1.0
    array[body] = 30.0
    liver = ((y - 0.45 * shape[1]) / (0.2 * shape[1])) ** 2 + ((x - 0.35 * shape[2]) / (0.18 * shape[2])) ** 2 < 1.0
    array[liver & body] = 60.0
    spine = ((y - 0.75 * shape[1]) / (0.07 * shape[1])) ** 2 + ((x - cx) / (0.07 * shape[2])) ** 2 < 1.0
    array[spine] = 500.0
    array += rng.normal(0.0, 15.0, shape).astype(np.float32)
    return np.clip(array, -1024, 3071).astype(np.int16)


def image_from(array, spacing=SPACING, origin=(0.0, 0.0, 0.0), is_vector=False):
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    n = image.GetDimension()
    image.SetSpacing((tuple(float(s) for s in spacing) + (1.0,) * n)[:n])
    image.SetOrigin((tuple(float(o) for o in origin) + (0.0,) * n)[:n])
    return image


def write(folder, name, image, compress=False):
    path = Path(folder) / name
    sitk.WriteImage(image, str(path), compress)
    return str(path)


def good_ct(folder, name="ct.nrrd", shape=SHAPE, spacing=SPACING, origin=(0.0, 0.0, 0.0), seed=0):
    return write(folder, name, image_from(ct_array(shape, seed), spacing, origin))


def mr_like(folder):
    """Readable, but intensities 0..1000 with no air at -1000: not a CT in HU."""
    array = (ct_array().astype(np.float32) + 1000.0) / 2.0
    return write(folder, "mr_like.nrrd", image_from(np.clip(array, 0, 1000).astype(np.int16)))


def short_z(folder):
    """A 60 mm slab: enough to run, too short to be sure the whole liver is covered."""
    return good_ct(folder, "short_z.nrrd", shape=(20, 64, 64))


def empty_mask(folder):
    return write(folder, "empty_mask.nrrd", image_from(np.zeros(SHAPE, np.uint8)))


# ---- broken files -------------------------------------------------------------------------------------


def _truncate(path, keep):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep if keep >= 0 else len(data) + keep])
    return str(path)


def missing_file(folder):
    return str(Path(folder) / "does_not_exist.nii.gz")


def empty_file(folder):
    path = Path(folder) / "empty.nrrd"
    path.write_bytes(b"")
    return str(path)


def garbage_bytes(folder):
    path = Path(folder) / "garbage.nii.gz"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return str(path)


def text_as_image(folder):
    path = Path(folder) / "notes.mha"
    path.write_text("this is not an image\n")
    return str(path)


def truncated_nifti_header(folder):
    return _truncate(good_ct(folder, "ct.nii"), 200)


def truncated_nifti(folder):
    path = good_ct(folder, "ct.nii")
    return _truncate(path, os.path.getsize(path) // 2)


def noisy_array(shape=SHAPE, seed=2):
    """Random int16 values: compress poorly, so a cut compressed file is not caught by a ratio bound."""
    return np.random.default_rng(seed).integers(-1000, 1000, shape, dtype=np.int16)


def truncated_nifti_gz(folder):
    path = write(folder, "ct.nii.gz", image_from(noisy_array()), compress=True)
    return _truncate(path, os.path.getsize(path) // 2)


def truncated_nrrd(folder):
    path = good_ct(folder, "ct.nrrd")
    return _truncate(path, os.path.getsize(path) // 2)


def truncated_nrrd_gzip(folder):
    path = write(folder, "ct_gz.nrrd", image_from(noisy_array()), compress=True)
    return _truncate(path, os.path.getsize(path) // 2)


def truncated_mha(folder):
    path = good_ct(folder, "ct.mha")
    return _truncate(path, os.path.getsize(path) // 2)


def truncated_mha_compressed(folder):
    """MetaIO reports this one by printing to the C stderr: it must not reach the terminal."""
    path = write(folder, "ct_z.mha", image_from(noisy_array()), compress=True)
    return _truncate(path, os.path.getsize(path) // 2)


def image_2d(folder):
    return write(folder, "slice.nrrd", image_from(ct_array()[20], spacing=(3.0, 3.0)))


def single_slice_volume(folder):
    return write(folder, "one_slice.nrrd", image_from(ct_array()[20:21]))


def image_4d(folder):
    array = np.stack([ct_array(seed=s) for s in range(3)])  # t, z, y, x
    return write(folder, "phases_4d.nii", image_from(array, spacing=SPACING + (1.0,)))


def vector_image(folder):
    array = np.stack([ct_array()] * 3, axis=-1)
    return write(folder, "rgb.nrrd", image_from(array, is_vector=True))


def tiny_volume(folder):
    return good_ct(folder, "tiny.nrrd", shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0))


def nan_voxels(folder):
    array = ct_array().astype(np.float32)
    array[20, 30:34, 30:34] = np.nan
    return write(folder, "nan.nrrd", image_from(array))


def inf_voxels(folder):
    array = ct_array().astype(np.float32)
    array[10, 5, 5] = np.inf
    return write(folder, "inf.nrrd", image_from(array))


def _patched_nifti(folder, name, fmt, offset, values):
    path = Path(good_ct(folder, name))
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return str(path)


# NIfTI-1: dim (8 int16) at byte 40, pixdim (8 float32) at byte 76
def nifti_zero_spacing(folder):
    return _patched_nifti(folder, "zero_spacing.nii", "<4f", 76, (1.0, 0.0, 3.0, 3.0))


def nifti_negative_spacing(folder):
    return _patched_nifti(folder, "negative_spacing.nii", "<4f", 76, (1.0, -3.0, 3.0, 3.0))


def nifti_nan_spacing(folder):
    return _patched_nifti(folder, "nan_spacing.nii", "<4f", 76, (1.0, 3.0, float("nan"), 3.0))


def nifti_absurd_size(folder):
    return _patched_nifti(folder, "absurd.nii", "<4h", 40, (3, 30000, 30000, 30000))


def nifti_gz_oversized(folder):
    """1000x1000x900 voxels (under the voxel cap) declared by a .nii.gz of a few hundred kilobytes."""
    path = Path(_patched_nifti(folder, "oversized.nii", "<4h", 40, (3, 1000, 1000, 900)))
    gz = path.with_name("oversized.nii.gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return str(gz)


def _nrrd(folder, name, fields, data=b"\0" * 128):
    path = Path(folder) / name
    header = "NRRD0004\ntype: short\ndimension: 3\n" + fields + "encoding: raw\nendian: little\n\n"
    path.write_bytes(header.encode("ascii") + data)
    return str(path)


def _nrrd_full(folder, name, fields):
    return _nrrd(folder, name, "sizes: 64 64 40\n" + fields, ct_array().tobytes())


def nrrd_zero_spacing(folder):
    return _nrrd_full(folder, "zero_spacing.nrrd", "spacings: 0 3 3\n")


def nrrd_negative_spacing(folder):
    return _nrrd_full(folder, "negative_spacing.nrrd", "spacings: -3 3 3\n")


def nrrd_degenerate_direction(folder):
    return _nrrd_full(folder, "degenerate.nrrd", "space: left-posterior-superior\n"
                      "space directions: (3,0,0) (3,0,0) (0,0,3)\nspace origin: (0,0,0)\n")


def nrrd_absurd_size(folder):
    return _nrrd(folder, "absurd.nrrd", "sizes: 100000 100000 100000\nspacings: 1 1 1\n")


def nrrd_size_overflow(folder):
    return _nrrd(folder, "overflow.nrrd", "sizes: 99999999999999999999 2 2\nspacings: 1 1 1\n")


def _mha(folder, name, fields, data=b"\0" * 128):
    path = Path(folder) / name
    header = "ObjectType = Image\nNDims = 3\n" + fields + "ElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    path.write_bytes(header.encode("ascii") + data)
    return str(path)


def mha_zero_spacing(folder):
    return _mha(folder, "zero_spacing.mha", "DimSize = 64 64 40\nElementSpacing = 3 0 3\n", ct_array().tobytes())


def mha_absurd_size(folder):
    return _mha(folder, "absurd.mha", "DimSize = 100000 100000 100000\nElementSpacing = 1 1 1\n")


def mha_oversized(folder):
    """900 million voxels (under the voxel cap) declared by a 200-byte file: must not be allocated."""
    return _mha(folder, "oversized.mha", "DimSize = 1000 1000 900\nElementSpacing = 1 1 1\n")


def fifo(folder):
    path = Path(folder) / "pipe.nrrd"
    os.mkfifo(str(path))
    return str(path)


# ---- folders and DICOM --------------------------------------------------------------------------------


def empty_folder(folder):
    path = Path(folder) / "empty_series"
    path.mkdir()
    return str(path)


def non_dicom_folder(folder):
    path = Path(folder) / "not_dicom"
    path.mkdir()
    (path / "readme.txt").write_text("no images here\n")
    (path / "IM0001.dcm").write_bytes(np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    good_ct(path, "volume.nrrd")  # an image, but not DICOM: a folder input means a DICOM series
    return str(path)


def write_dicom_series(folder, positions_mm, size=64, pixel_mm=3.0, slice_mm=3.0):
    """A minimal CT series, one file per position along z."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    root = "1.2.826.0.1.3680043.8.498.7"
    array = ct_array((1, size, size))[0]
    for index, z in enumerate(positions_mm):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((pixel_mm, pixel_mm))
        tags = {"0008|0060": "CT", "0020|000d": root + ".1", "0020|000e": root + ".2",
                "0008|0018": "{}.3.{}".format(root, index + 1), "0020|0013": str(index + 1),
                "0020|0032": "0\\0\\{:g}".format(z), "0020|0037": "1\\0\\0\\0\\1\\0",
                "0018|0050": "{:g}".format(slice_mm), "0028|1052": "0", "0028|1053": "1"}
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / "IM{:04d}.dcm".format(index + 1)))
        writer.Execute(image)
    return str(folder)


def dicom_single_slice(folder):
    return write_dicom_series(Path(folder) / "dicom_one", [0.0])


def dicom_duplicate_positions(folder):
    """20 slices 3 mm apart (60 mm: enough to run) plus a copy of one of them."""
    return write_dicom_series(Path(folder) / "dicom_dup", [3.0 * i for i in range(20)] + [30.0])


def dicom_missing_slice(folder):
    """20 slices, one of them cut in half: the reader drops it and a 6 mm gap remains."""
    path = write_dicom_series(Path(folder) / "dicom_gap", [3.0 * i for i in range(20)])
    victim = Path(path) / "IM0010.dcm"
    _truncate(victim, os.path.getsize(victim) // 2)
    return path


# ---- model packages -----------------------------------------------------------------------------------


def copy_package(source, folder, name="pkg"):
    target = Path(folder) / name
    shutil.copytree(str(source), str(target))
    return target


def read_card(package):
    return json.loads((Path(package) / "model.json").read_text(encoding="utf-8"))


def write_card(package, card):
    (Path(package) / "model.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tamper_weights(package):
    """Flip one byte in the middle of the weights; the card still records the old SHA-256."""
    weights = Path(package) / read_card(package)["weights"][0]["file"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))


def truncate_weights_keep_card_consistent(package):
    """A cut safetensors file whose SHA-256 the card records: passes the checksum, fails to load."""
    card = read_card(package)
    weights = Path(package) / card["weights"][0]["file"]
    _truncate(weights, os.path.getsize(weights) // 3)
    card["weights"][0]["sha256"] = sha256(weights)
    write_card(package, card)


def card_for_other_network(package):
    """Valid weights with a matching checksum, but the card describes a different network."""
    card = read_card(package)
    card["network"]["channels"] = [4, 8, 16, 32, 64]
    write_card(package, card)


def zip_package(package, folder, corrupt=False):
    archive = Path(folder) / "model.zip"
    with zipfile.ZipFile(str(archive), "w", zipfile.ZIP_DEFLATED) as out:
        for item in sorted(Path(package).iterdir()):
            out.write(str(item), "pkg/" + item.name)
    if corrupt:
        data = bytearray(archive.read_bytes())
        middle = len(data) // 2
        for i in range(middle, middle + 64):
            data[i] ^= 0xFF
        archive.write_bytes(bytes(data))
    return archive
