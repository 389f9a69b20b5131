"""Params to and from NumPy .npz archives, refusing pickles and lying headers."""

import io
import zipfile

import numpy as np
import pytest

import knetflow as kf
from knetflow.serialize import load_npz, save_npz


def test_round_trip_with_numpy(tmp_path):
    params = {"w": np.arange(6, dtype="float32").reshape(2, 3), "b": np.array([True, False]),
              "f": np.asfortranarray(np.ones((2, 3))), "s": np.array(3, "int64")}
    for compressed in (False, True):
        path = save_npz(tmp_path / f"p{compressed}.npz", params, compressed=compressed)
        with np.load(path) as z:  # NumPy reads ours
            assert sorted(z.files) == sorted(params)
        got = load_npz(path)
        for name, value in params.items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape
            np.testing.assert_array_equal(got[name], value)
    np.savez(tmp_path / "theirs.npz", a=np.ones(3, ">f8"))  # and we read NumPy's
    assert load_npz(tmp_path / "theirs.npz")["a"].dtype == np.dtype("float64")


def test_params_move_between_formats(tmp_path):
    x = kf.placeholder("x", (None, 2))
    w = kf.param("w", value=np.eye(2, dtype="float32"))
    path = kf.save(tmp_path / "m.kf", x @ w)
    save_npz(tmp_path / "p.npz", kf.load(path).params)
    params = load_npz(tmp_path / "p.npz")
    params["w"] = params["w"] * 2
    model = kf.load_model(kf.save(tmp_path / "m2.kf", x @ w, params=params))
    np.testing.assert_array_equal(model(np.ones((1, 2), "float32")), [[2, 2]])


def _npz_with(name: str, member: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(name, member)
    return buffer.getvalue()


def _npy(array, shape=None) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    data = buffer.getvalue()
    if shape is not None:
        data = data.replace(repr(array.shape).encode(), repr(shape).encode().ljust(
            len(repr(array.shape))))
    return data


@pytest.mark.parametrize("data, message", [
    (b"not a zip", "not a valid .npz archive"),
    (_npz_with("a.npy", _npy(np.array([{"evil": 1}], dtype=object))), "unsupported dtype object"),
    (_npz_with("a.npy", _npy(np.ones(4, complex))), "unsupported dtype complex128"),
    (_npz_with("a.npy", _npy(np.ones(4), shape=(9999999,))), "does not fit"),
    (_npz_with("a.txt", b"hello"), "not a .npy member"),
    (_npz_with("a.npy", b"\x93NUMPY garbage"), "unsupported .npy version"),
    (_npz_with("a.npy", b"\x93NUMPY\x01\x00\xff"), "not a valid .npz archive"),
])
def test_bad_archives_raise_format_error(tmp_path, data, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(kf.FormatError, match=message):
        load_npz(path)
