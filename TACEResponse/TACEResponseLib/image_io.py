"""Reading CT volumes safely: check the header before any pixel is allocated, then read.

Every problem a user can cause raises InputError naming the file and the problem in one line:
headers declaring absurd sizes or more pixel data than the file can hold (never allocated), zero, negative
or non-finite spacing, degenerate orientation, truncated data (including the truncated .nii/.nii.gz files
that ITK itself would silently pad), NaN voxels, and DICOM series with duplicate or missing slices.
Messages that ITK, MetaIO or GDCM print straight to the C stderr are caught, so the user sees one line.
"""

import contextlib
import gzip
import os
import re
import struct
import sys
import tempfile
import threading
import zlib

import numpy as np
import SimpleITK as sitk

from .errors import InputError

# A CT volume is at most a few thousand slices of 512x512; a header claiming more is broken or hostile.
MAX_VOXELS = 2_000_000_000 // 2
MAX_BYTES = 8 * 1024 ** 3
# deflate (gzip, zlib) cannot expand data by more than about 1032:1; a header declaring more is impossible
MAX_DEFLATE_RATIO = 1032
_TEXT_HEADER_LIMIT = 1 << 20
_POSITION_TAG = "0020|0032"


def _quiet():
    sitk.ProcessObject_SetGlobalWarningDisplay(False)


@contextlib.contextmanager
def _native_stderr_captured():
    """Send what native code writes to file descriptor 2 into a list of lines instead of the terminal.

    Only in the main thread: redirecting a process-wide descriptor from several threads could leave it
    pointing at a closed file.
    """
    lines = []
    saved = None
    if threading.current_thread() is threading.main_thread():
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            saved = None
    if saved is None:
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(64 * 1024).decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _native_call(call):
    """Run an ITK call with the C-level stderr captured: (result, RuntimeError or None, captured lines)."""
    with _native_stderr_captured() as native:
        try:
            return call(), None, native
        except RuntimeError as exc:
            error = exc
    return None, error, native


def _reason(exc, native_lines=()):
    """The useful part of an ITK exception (plus what native code printed), on one short line."""
    lines = []
    for line in str(exc).splitlines():
        line = line.strip()
        # banners and errno leftovers ("Reason: No such file or directory" for a file that exists) mislead
        if not line or line.startswith("Exception thrown in SimpleITK") or line.startswith("Reason:"):
            continue
        line = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", line)
        line = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
        lines.append(line)
    text = lines[-1] if lines else type(exc).__name__
    if native_lines:
        text += "; " + " ".join(native_lines[:2])
    return text[:300]


def find_dicom_series(folder):
    """Return the file list of the largest DICOM series in ``folder`` and the number of series found.

    InputError when the folder cannot be listed, is empty or holds no DICOM series.
    """
    _quiet()
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries]
    except OSError as exc:
        raise InputError(folder, "cannot list folder ({})".format(exc.strerror or exc)) from None
    if not names:
        raise InputError(folder, "folder is empty")
    with _native_stderr_captured():
        try:
            series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
        except RuntimeError:
            series_ids = ()
        files_per_series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids]
    files_per_series = [files for files in files_per_series if files]
    if not files_per_series:
        raise InputError(folder, "no DICOM series found in this folder ({} entries, none readable as DICOM "
                                 "images; DICOM files in subfolders are not searched)".format(len(names)))
    return max(files_per_series, key=len), len(files_per_series)


def _size_text(size):
    return "x".join(str(int(s)) for s in size)


def _check_geometry(path, dim, size, components, spacing, direction, origin):
    """Checks shared by file headers and DICOM series: dimension, components, size, spacing, orientation."""
    if dim == 4 and size[3] == 1:
        dim = 3
    if dim < 3 or (dim == 3 and min(size[:3]) <= 1):
        raise InputError(path, "is a 2D image (size {}: a single slice); a 3D CT volume is needed".format(
            _size_text(size)))
    if dim > 3:
        raise InputError(path, "is a {}D image (size {}); give one 3D volume (one phase) per input".format(
            dim, _size_text(size)))
    if components != 1:
        raise InputError(path, "has {} components per voxel (vector or color image); a scalar CT volume is needed"
                         .format(components))
    voxels = int(np.prod([float(s) for s in size[:3]], dtype=np.float64))
    if voxels > MAX_VOXELS or voxels * 4 > MAX_BYTES:
        raise InputError(path, "header declares an implausible size {} ({} voxels); refusing to allocate".format(
            _size_text(size[:3]), voxels))
    spacing = tuple(float(s) for s in spacing[:3])
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(path, "has zero, negative or invalid voxel spacing {}".format(spacing))
    if not all(np.isfinite(float(v)) for v in origin):
        raise InputError(path, "has an invalid (non-finite) origin {}".format(tuple(origin)))
    n = int(round(len(direction) ** 0.5))
    matrix = np.asarray(direction, dtype=np.float64).reshape(n, n)[:3, :3]
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-3:
        raise InputError(path, "has a degenerate orientation (direction matrix {} is singular)".format(
            np.round(matrix, 3).tolist()))


def _check_header(path, reader, file_name=None):
    """Validate what the header declares (dimension, components, size, spacing, orientation, data size)."""
    _, error, native = _native_call(reader.ReadImageInformation)
    if error is not None:
        raise InputError(path, "cannot read image header ({})".format(_reason(error, native)))
    _check_geometry(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(),
                    reader.GetSpacing(), reader.GetDirection(), reader.GetOrigin())
    size = reader.GetSize()
    voxels = int(np.prod([int(s) for s in size], dtype=np.float64))
    try:
        component_bytes = sitk.Image([1, 1], reader.GetPixelID(), max(1, reader.GetNumberOfComponents()))\
            .GetSizeOfPixelComponent()
    except RuntimeError:
        component_bytes = 1
    _check_data_size(path, voxels * max(1, reader.GetNumberOfComponents()) * component_bytes,
                     str(file_name or path))


# ---- does the file hold as much pixel data as its header declares? --------------------------------------


def _bytes_text(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return "{:.0f} {}".format(n, unit) if unit == "bytes" else "{:.1f} {}".format(n, unit)
        n /= 1024.0


def _refuse_short(path, declared, available, compressed=False):
    if compressed:
        raise InputError(path, "header declares {} of pixel data, more than {} of compressed data can hold; "
                               "the header is corrupt, refusing to allocate".format(_bytes_text(declared),
                                                                                  _bytes_text(available)))
    raise InputError(path, "is truncated: header declares {} of pixel data but the file holds only {}".format(
        _bytes_text(declared), _bytes_text(max(available, 0))))


def _gunzipped_length(path, needed):
    """Bytes a gzip file decompresses to, counted up to ``needed``, and whether the stream read cleanly."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total < needed:
                block = stream.read(int(min(1 << 24, needed - total)))
                if not block:
                    break
                total += len(block)
    except (OSError, EOFError, zlib.error):
        return total, False
    return total, True


def _nifti_header(path, gzipped):
    """(data offset, declared data bytes, spatial pixdim) from a NIfTI-1/-2 single-file header, or None."""
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as stream:
            head = stream.read(544)
    except (OSError, EOFError, zlib.error):
        return None
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348 and head[344:348] == b"n+1\0":
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            pixdim = struct.unpack(endian + "8f", head[76:108])
            offset = struct.unpack(endian + "f", head[108:112])[0]
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540 and head[4:8] == b"n+2\0":
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            pixdim = struct.unpack(endian + "8d", head[104:168])
            offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        return None
    n = int(dims[0])
    if not 1 <= n <= 7 or bitpix <= 0 or any(d < 1 for d in dims[1:n + 1]):
        return None  # ITK has refused or reported it already
    declared = float(np.prod([float(d) for d in dims[1:n + 1]])) * bitpix / 8.0
    return max(float(offset), 348.0), declared, tuple(float(p) for p in pixdim[1:min(n, 3) + 1])


def _text_header(path, terminator):
    """Lines of a text header up to ``terminator(line)`` (or a blank line), and the header length in bytes."""
    lines, length = [], 0
    with open(path, "rb") as stream:
        while length < _TEXT_HEADER_LIMIT:
            raw = stream.readline(_TEXT_HEADER_LIMIT)
            if not raw:
                break
            length += len(raw)
            line = raw.decode("latin-1").strip()
            if not line and lines:
                break
            lines.append(line)
            if terminator(line):
                break
    return lines, length


def _data_file(path, name):
    """The detached data file a header names, or None when it names a list or a pattern of files."""
    name = name.strip()
    if not name or "%" in name or name.upper().startswith("LIST") or " " in name:
        return None
    return name if os.path.isabs(name) else os.path.join(os.path.dirname(os.path.abspath(path)), name)


def _check_data_size(path, declared, file_name):
    """Refuse (before ITK allocates anything) a file that cannot hold the pixel data its header declares.

    ``file_name`` is the file read, ``path`` what the user gave (a file, or a folder holding one DICOM file).
    """
    with open(file_name, "rb") as stream:
        magic = stream.read(8)
    file_size = os.path.getsize(file_name)
    if magic[:2] == b"\x1f\x8b":  # a gzip-wrapped file: .nii.gz
        nifti = _nifti_header(file_name, gzipped=True)
        if nifti is None:
            if declared > file_size * MAX_DEFLATE_RATIO:
                _refuse_short(path, declared, file_size, compressed=True)
            return
        offset, nifti_declared, pixdim = nifti
        _check_nifti_pixdim(path, pixdim)
        needed = offset + nifti_declared
        if needed > file_size * MAX_DEFLATE_RATIO:
            _refuse_short(path, needed - offset, file_size, compressed=True)
        # ITK pads a truncated .nii.gz with zeros without a word: count what the stream really holds
        length, clean = _gunzipped_length(file_name, needed)
        if length < needed:
            if not clean:
                raise InputError(path, "is truncated or corrupt: its compressed data ends before the {} of pixel "
                                       "data the header declares".format(_bytes_text(needed - offset)))
            _refuse_short(path, needed - offset, length - offset)
        return
    if magic[:4] == b"NRRD":
        _check_nrrd_size(path, file_name, declared, file_size)
        return
    nifti = _nifti_header(file_name, gzipped=False)
    if nifti is not None:
        offset, nifti_declared, pixdim = nifti
        _check_nifti_pixdim(path, pixdim)
        needed = offset + nifti_declared
        if file_size < needed:  # ITK reads a truncated .nii silently, too
            _refuse_short(path, needed - offset, file_size - offset)
        return
    if file_name.lower().endswith((".mha", ".mhd")):
        _check_metaimage_size(path, file_name, declared, file_size)


def _check_nifti_pixdim(path, pixdim):
    # ITK turns a zero or NaN pixdim into 1 mm without a word, so look at the header itself
    if not all(np.isfinite(p) and p != 0 for p in pixdim):
        raise InputError(path, "has zero, negative or invalid voxel spacing in its header (pixdim {})".format(
            tuple(round(p, 4) for p in pixdim)))


def _check_nrrd_size(path, file_name, declared, file_size):
    lines, header_length = _text_header(file_name, lambda line: False)
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    encoding = fields.get("encoding", "raw").lower()
    data_name = fields.get("data file", fields.get("datafile"))
    if data_name is not None:
        data_path = _data_file(file_name, data_name)
        if data_path is None or not os.path.isfile(data_path):
            return  # a list or pattern of files, or a missing one that ITK reports itself
        available = os.path.getsize(data_path)
    else:
        available = file_size - header_length
    if encoding == "raw":
        if available < declared:
            _refuse_short(path, declared, available)
    elif encoding in ("gzip", "gz"):
        if declared > max(available, 1) * MAX_DEFLATE_RATIO:
            _refuse_short(path, declared, available, compressed=True)


def _check_metaimage_size(path, file_name, declared, file_size):
    lines, header_length = _text_header(file_name, lambda line: line.lower().startswith("elementdatafile"))
    fields = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if "elementdatafile" not in fields:
        return
    if fields["elementdatafile"].upper() == "LOCAL":
        available = file_size - header_length
    else:
        data_path = _data_file(file_name, fields["elementdatafile"])
        if data_path is None or not os.path.isfile(data_path):
            return
        available = os.path.getsize(data_path)
    if fields.get("compresseddata", "false").lower() == "true":
        if declared > max(available, 1) * MAX_DEFLATE_RATIO:
            _refuse_short(path, declared, available, compressed=True)
    elif available < declared:
        _refuse_short(path, declared, available)


# ---- DICOM series ---------------------------------------------------------------------------------------


def _check_slice_positions(path, reader, image):
    """Duplicate or unevenly spaced slices (a missing or unreadable file) would distort every measurement."""
    n = image.GetSize()[2]
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, _POSITION_TAG).split("\\")[:3]]
                              for i in range(n)])
    except (RuntimeError, ValueError, IndexError):
        return  # positions not recorded: nothing to compare
    if positions.shape != (n, 3) or not np.isfinite(positions).all():
        return
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    gaps = np.diff(np.sort(positions @ normal))
    if gaps.min() < 1e-3:
        raise InputError(path, "DICOM series has {} slice(s) at duplicate positions (two series mixed, or copied "
                               "files?)".format(int((gaps < 1e-3).sum())))
    median = float(np.median(gaps))
    if gaps.max() - gaps.min() > max(0.05, 0.1 * median):
        raise InputError(path, "DICOM slice spacing is uneven ({:.2f} to {:.2f} mm): missing, unreadable or extra "
                               "slices?".format(gaps.min(), gaps.max()))


def _read_dicom_folder(path, warnings):
    files, n_series = find_dicom_series(path)
    if n_series > 1:
        warnings.append("{}: {} DICOM series found; using the largest ({} files)".format(path, n_series, len(files)))
    return read_dicom_files(path, files)


def read_dicom_files(path, files):
    """Read the slices ``files`` (one series, any order) as a volume, checked as a folder input is.

    Messages name ``path`` (the study folder the user gave). Used for a series picked out of a study.
    """
    _quiet()
    if len(files) == 1:
        # one file: a single slice, or an enhanced multi-frame object holding the whole volume
        return _read_file(path, files[0])
    header_reader = sitk.ImageFileReader()
    header_reader.SetFileName(files[0])
    _, error, native = _native_call(header_reader.ReadImageInformation)
    if error is not None:
        raise InputError(path, "cannot read DICOM header of {} ({})".format(
            os.path.basename(files[0]), _reason(error, native)))
    size = header_reader.GetSize()
    if len(size) >= 3 and size[2] > 1:
        raise InputError(path, "DICOM series of {} multi-frame files; give one file's folder per volume".format(
            len(files)))
    voxels = float(size[0]) * float(size[1]) * len(files)
    if voxels > MAX_VOXELS:
        raise InputError(path, "DICOM series declares an implausible size {}x{}x{}; refusing to allocate".format(
            size[0], size[1], len(files)))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image, error, native = _native_call(reader.Execute)
    if error is not None:
        raise InputError(path, "cannot read DICOM series, a file may be truncated or corrupt ({})".format(
            _reason(error, native)))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, "DICOM series is not a scalar image (color or multi-frame vector data)")
    _check_slice_positions(path, reader, image)
    return image


def _gunzip_nifti(path, file_name, folder):
    """Decompress a .nii.gz once into ``folder`` (ITK would inflate it again after our truncation check).

    Returns the plain .nii path, or None when the file is not a gzip-wrapped single-file NIfTI. The header
    is checked against the compressed size first, so an absurd header never makes us inflate anything.
    """
    with open(file_name, "rb") as stream:
        if stream.read(2) != b"\x1f\x8b":
            return None
    nifti = _nifti_header(file_name, gzipped=True)
    if nifti is None:
        return None
    offset, declared, pixdim = nifti
    _check_nifti_pixdim(path, pixdim)
    needed = offset + declared
    if needed > os.path.getsize(file_name) * MAX_DEFLATE_RATIO:
        _refuse_short(path, declared, os.path.getsize(file_name), compressed=True)
    target = os.path.join(folder, "image.nii")
    total, clean = 0, True
    try:
        with gzip.open(file_name, "rb") as source, open(target, "wb") as out:
            while total < needed:
                block = source.read(int(min(1 << 24, needed - total)))
                if not block:
                    break
                out.write(block)
                total += len(block)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        clean = False
    if total < needed:
        if not clean:
            raise InputError(path, "is truncated or corrupt: its compressed data ends before the {} of pixel "
                                   "data the header declares".format(_bytes_text(declared)))
        _refuse_short(path, declared, total - offset)
    return target


def _read_file(path, file_name):
    """Read one image file; messages name ``path`` (the argument the user gave)."""
    if os.path.getsize(file_name) == 0:
        raise InputError(path, "file is empty")
    if str(file_name).lower().endswith(".nii.gz"):
        with tempfile.TemporaryDirectory(prefix="tace-response-") as folder:
            plain = _gunzip_nifti(path, file_name, folder)
            if plain is not None:
                return _read_file(path, plain)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file_name))
    _check_header(path, reader, file_name)
    image, error, native = _native_call(reader.Execute)
    if error is not None:
        raise InputError(path, "cannot read image data, the file may be truncated or corrupt ({})".format(
            _reason(error, native)))
    return image


def read_image(path):
    """Read a 3D scalar image from a file or a DICOM series folder. Returns (image, warnings)."""
    path = str(path)
    warnings = []
    if not os.path.exists(path):
        raise InputError(path, "does not exist")
    _quiet()
    if os.path.isdir(path):
        image = _read_dicom_folder(path, warnings)
    elif not os.path.isfile(path):
        raise InputError(path, "is not a regular file or a folder")
    else:
        image = _read_file(path, path)
    return _checked_volume(path, image), warnings


def read_dicom_series(path, files):
    """Read one series (its slice files) out of the study folder ``path``. Returns (image, warnings)."""
    return _checked_volume(str(path), read_dicom_files(str(path), [str(f) for f in files])), []


def _checked_volume(path, image):
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    # what the assembled volume turned out to be (DICOM series spacing is only known now)
    _check_geometry(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(),
                    image.GetSpacing(), image.GetDirection(), image.GetOrigin())
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(path, "contains {} NaN or infinite voxel value(s)".format(bad))
    return image


def read_mask(path):
    """Read a label/mask volume; no intensity checks."""
    image, _ = read_image(path)
    return image


def write_atomically(image, path, compress=True):
    """Write an image to ``path`` through a temporary name, so a failure never leaves a half-written file."""
    path = str(path)
    tmp = path + ".partial" + (".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1])
    try:
        sitk.WriteImage(image, tmp, compress)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
