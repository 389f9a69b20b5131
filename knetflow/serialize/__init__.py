"""Saving and loading graphs, parameters, optimizer and training state (msgpack).

One file format (docs/FORMAT.md): a 32-byte preamble (magic, format version,
lengths, CRC-32 checksums), a small msgpack header, a msgpack tree of plain
values, and an array section in which every array is a msgpack extension
object holding its dtype, shape and little-endian bytes. Writes are atomic and
durable (files.py); loads never execute code, bound every length by the
file's size and raise `kf.FormatError` on any malformed input.

Modules, one job each:
    format.py       preamble, header, checksums; the container read/write
    arrays.py       array records (dtype whitelist, shape, zero-copy views)
    tree.py         plain-value trees (tuples, big ints, array references)
    graph_codec.py  Graph <-> plain data, validated against the op registry
    files.py        atomic durable writes, bounded reads
    saving.py       kf.save / kf.load, save_state / load_state
    checkpoint.py   MXNet-style checkpoints, CheckpointManager
    model.py        kf.load_model: inference without the building code
    npz.py          params to and from NumPy .npz
    describe.py     the text of `knetflow inspect`
"""

from knetflow.serialize.checkpoint import (
    Checkpoint,
    CheckpointManager,
    load_checkpoint,
    save_checkpoint,
)
from knetflow.serialize.describe import describe
from knetflow.serialize.files import atomic_write
from knetflow.serialize.format import FORMAT_VERSION, MAGIC
from knetflow.serialize.model import InferenceModel, load_model
from knetflow.serialize.npz import load_npz, save_npz
from knetflow.serialize.saving import LoadedFile, dumps, load, load_state, loads, save, save_state

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Checkpoint",
    "CheckpointManager",
    "InferenceModel",
    "LoadedFile",
    "atomic_write",
    "describe",
    "dumps",
    "load",
    "load_checkpoint",
    "load_model",
    "load_npz",
    "load_state",
    "loads",
    "save",
    "save_checkpoint",
    "save_npz",
    "save_state",
]
