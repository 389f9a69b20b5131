"""Params to and from NumPy `.npz` archives (interop with other tools).

`load_npz` reads the archive itself rather than trusting `np.load`: it never
unpickles, accepts only the dtypes knetflow supports, and checks each
member's declared shape against the member's size before allocating, so a
hostile archive cannot claim more memory than it can hold (a deflated member
at most 1032 times its compressed size, deflate's largest ratio).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from knetflow.errors import FormatError
from knetflow.serialize.arrays import as_savable, supported
from knetflow.serialize.files import atomic_write, read_exactly

DEFLATE_MAX_RATIO = 1032


def save_npz(path, params: dict, compressed: bool = False) -> str:
    """Write params (name -> array) to a NumPy `.npz` archive, atomically; the path.

    Example:
        >>> import knetflow as kf, numpy as np, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "p.npz")
        >>> _ = kf.serialize.save_npz(path, {"w": np.ones(2)})
        >>> kf.serialize.load_npz(path)["w"]
        array([1., 1.])
    """
    arrays = {}
    for name, value in dict(params).items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {name!r}")
        arrays[name] = as_savable(value)
    path = os.fspath(path)
    with atomic_write(path) as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return path


def _header(member, name: str):
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(member)
    else:
        raise FormatError(f"{name}: unsupported .npy version {version}")
    if not supported(dtype) or dtype.hasobject:
        raise FormatError(f"{name}: unsupported dtype {dtype}")
    return shape, fortran, dtype


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> np.ndarray:
    name = info.filename
    if info.compress_type == zipfile.ZIP_STORED:
        limit = min(info.compress_size, size)
    else:
        limit = info.compress_size * DEFLATE_MAX_RATIO
    if info.file_size > limit:
        raise FormatError(f"{name}: claims {info.file_size} bytes, more than it can hold")
    with archive.open(info) as member:
        shape, fortran, dtype = _header(member, name)
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if nbytes + member.tell() != info.file_size:
            raise FormatError(f"{name}: shape {shape} of {dtype} does not fit its "
                              f"{info.file_size} bytes")
        buf = np.empty(nbytes, dtype=np.uint8)
        if read_exactly(member, memoryview(buf)) != nbytes:
            raise FormatError(f"{name}: truncated")
    array = buf.view(dtype) if nbytes else np.empty(0, dtype)
    array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    return array.astype(dtype.newbyteorder("="), order="C", copy=False)


def load_npz(path) -> dict:
    """The arrays of a NumPy `.npz` archive by name; FormatError if it is malformed."""
    path = os.fspath(path)
    out = {}
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise FormatError(f"{info.filename}: not a .npy member")
                out[info.filename[:-4]] = _member(archive, info, size)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # noqa: BLE001 - zipfile, zlib and the .npy parser raise many kinds
        raise FormatError(f"{path}: not a valid .npz archive: {type(e).__name__}: {e}") from None
    return out
