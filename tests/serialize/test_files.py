"""Atomic, durable writes: the old file survives a failed write; fsync before and after rename."""

import os
import stat

import numpy as np
import pytest

import knetflow as kf
from knetflow.serialize import atomic_write, files
from tests.serialize.common import mlp


def test_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "m.kf"
    kf.save(path, mlp(), version=1)
    kf.save(path, mlp(), version=2)
    assert kf.load(path).metadata == {"version": 2}
    assert os.listdir(tmp_path) == ["m.kf"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.kf"
    kf.save(path, mlp(), version=1)
    with pytest.raises(TypeError, match="not a plain value"):
        kf.save(path, mlp(), version=object())
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert kf.load(path).metadata == {"version": 1}
    assert os.listdir(tmp_path) == ["m.kf"]


def test_data_and_directory_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    kf.save(tmp_path / "m.kf", mlp())
    assert events == ["file", "rename", "dir"]


def test_new_files_get_the_usual_mode_and_keep_an_existing_one(tmp_path):
    path = tmp_path / "m.kf"
    kf.save(path, mlp())
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    os.chmod(path, 0o640)
    kf.save(path, mlp())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_temp_names_are_recognised():
    assert files.is_temp(".m.kf.abc123.tmp") and not files.is_temp("m.kf")


def test_load_from_disk_gives_writable_arrays(tmp_path):
    path = kf.serialize.save_state(tmp_path / "s.kfs", {"m": np.zeros(3)})
    m = kf.serialize.load_state(path)["m"]
    m += 1
    assert m.flags.writeable and m.tolist() == [1, 1, 1]


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        kf.load(tmp_path / "nope.kf")


def test_memory_mapped_loads_are_copy_on_write(tmp_path):
    path = kf.serialize.save_state(tmp_path / "s.kfs", {"m": np.arange(4.0)})
    m = kf.serialize.load_state(path, mmap=True)["m"]
    m[0] = 9
    assert m.tolist() == [9, 1, 2, 3]
    assert kf.serialize.load_state(path)["m"].tolist() == [0, 1, 2, 3]
    bad = tmp_path / "bad.kfs"
    with open(path, "rb") as f:
        bad.write_bytes(f.read()[:-1])
    with pytest.raises(kf.FormatError, match="truncated"):
        kf.load(bad, mmap=True)
