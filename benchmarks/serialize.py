"""Serialization benchmarks: save/load throughput, file size, model load latency,
and the long fuzz and kill runs.

    python benchmarks/serialize.py [--mb 500] [--repeat 3] [--dir DIR]
                                   [--fuzz N] [--kill N]

Throughput: a parameter set of about `--mb` MB (float32 arrays) saved and
loaded by knetflow, against writing/reading the same bytes raw and against
np.savez/np.load, on the same disk, warm page cache (files are read right after
they are written; the machine is shared, so caches are not dropped), as median and
best wall time and median CPU time (all threads) of interleaved runs. knetflow's
writes are durable (fsync of the file and the directory), so they are compared
with a raw write that fsyncs too; the non-durable figures are given as well.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import knetflow as kf
from knetflow.serialize import saving


def once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def once_with_cpu(fn):
    """(wall seconds, CPU seconds of this process, all threads, user + system)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def timed(fn, repeat):
    return statistics.median(once(fn) for _ in range(repeat))


def param_set(mb):
    """About `mb` MB of float32 params: ten big matrices and a few small vectors."""
    rows = int(mb * 1e6 / 4 / 10 / 1024)
    rs = np.random.RandomState(0)
    params = {f"layer{k}_weight": rs.standard_normal((rows, 1024)).astype("float32")
              for k in range(10)}
    params.update({f"layer{k}_bias": np.zeros(1024, "float32") for k in range(10)})
    return params


def raw_write(path, params, durable):
    with open(path, "wb") as f:
        f.writelines(a.data for a in params.values())
        if durable:
            f.flush()
            os.fsync(f.fileno())


def raw_atomic_write(path, params):
    """The bytes alone, written as knetflow writes: a new file, fsync, rename, fsync dir."""
    temp = path + ".tmp"
    raw_write(temp, params, True)
    os.replace(temp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def raw_read(path, chunk=32 * 2**20):
    """The bytes into one new buffer, in chunks as knetflow reads them."""
    size = os.path.getsize(path)
    buf = np.empty(size, np.uint8)
    view = memoryview(buf)
    with open(path, "rb") as f:
        for start in range(0, size, chunk):
            f.readinto(view[start:start + chunk])
    return buf


def npz_load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def throughput(directory, mb, repeat):
    params = param_set(mb)
    nbytes = sum(a.nbytes for a in params.values())
    raw, npz, ours = (os.path.join(directory, n) for n in ("raw.bin", "p.npz", "p.kfs"))
    durable_raw, plain_raw, read_raw = "raw write + fsync", "raw write, no fsync", "raw read"
    # name -> (what it does, the raw operation it is compared with)
    ops = {
        plain_raw: (lambda: raw_write(raw, params, False), plain_raw),
        durable_raw: (lambda: raw_write(raw, params, True), durable_raw),
        "raw write, atomic (new file, fsync, rename, fsync dir)": (
            lambda: raw_atomic_write(raw, params), durable_raw),
        "np.savez": (lambda: np.savez(npz, **params), plain_raw),
        "knetflow save, no fsync": (lambda: saving.write_file(
            ours, "state", {"state": params, "metadata": {}}, durable=False), plain_raw),
        "knetflow save (durable: fsync file and dir)": (
            lambda: kf.serialize.save_state(ours, params), durable_raw),
        read_raw: (lambda: raw_read(raw), read_raw),
        "np.load (npz)": (lambda: npz_load(npz), read_raw),
        "knetflow load": (lambda: kf.serialize.load_state(ours), read_raw),
        "knetflow load, mmap=True (checksum read through the map)": (
            lambda: kf.serialize.load_state(ours, mmap=True), read_raw),
    }
    times = {name: [] for name in ops}
    cpu = {name: [] for name in ops}
    for _ in range(repeat):  # interleaved, so a slow moment of the disk hits every row alike
        for name, (fn, _) in ops.items():
            wall, used = once_with_cpu(fn)
            times[name].append(wall)
            cpu[name].append(used)
    medians = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    cpus = {name: statistics.median(t) for name, t in cpu.items()}
    print(f"\n## {nbytes / 1e6:.0f} MB parameter set ({len(params)} arrays) in "
          f"{directory}, {repeat} runs\n")
    print("| operation | median s | GB/s | vs raw | best s | GB/s | vs raw | CPU s | vs raw |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (_, base) in ops.items():
        m, b, c = medians[name], best[name], cpus[name]
        print(f"| {name} | {m:.3f} | {nbytes / m / 1e9:.2f} | {medians[base] / m:.0%} "
              f"| {b:.3f} | {nbytes / b / 1e9:.2f} | {best[base] / b:.0%} "
              f"| {c:.3f} | {cpus[base] / c:.0%} |")
    size = os.path.getsize(ours)
    print(f"\nfile size: {size:,} bytes for {nbytes:,} bytes of arrays "
          f"(overhead {(size - nbytes) / nbytes:.4%}); npz {os.path.getsize(npz):,} bytes")


def mlp_file(directory):
    x = kf.placeholder("x", (None, 784))
    rs = np.random.RandomState(0)
    w1 = kf.param("w1", value=rs.randn(784, 64).astype("float32") * 0.05)
    b1 = kf.param("b1", value=np.zeros(64, "float32"))
    w2 = kf.param("w2", value=rs.randn(64, 10).astype("float32") * 0.05)
    b2 = kf.param("b2", value=np.zeros(10, "float32"))
    path = os.path.join(directory, "mlp.kf")
    kf.save(path, kf.relu(x @ w1 + b1) @ w2 + b2)
    nbytes = sum(n.attrs["value"].nbytes for n in kf.load(path).graph.params)
    return path, nbytes


def _latencies(path, x, repeat):
    load = timed(lambda: kf.load_model(path), repeat * 3)
    first = timed(lambda: kf.load_model(path)(x), repeat * 3)
    model = kf.load_model(path)
    model(x)
    return load, first, timed(lambda: model(x), repeat * 10)


def latency(directory, repeat):
    path, nbytes = mlp_file(directory)
    x = np.random.RandomState(1).rand(100, 784).astype("float32")
    np.save(os.path.join(directory, "x.npy"), x)
    rows = [("BLAS threads as set up", _latencies(path, x, repeat))]
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:  # a busy 2-core machine stalls a 2-thread matmul
        with threadpool_limits(1):
            rows.append(("1 BLAS thread", _latencies(path, x, repeat)))
    code = ("import time; t = time.perf_counter(); import numpy as np, knetflow as kf; "
            f"m = kf.load_model({path!r}); m(np.load({os.path.join(directory, 'x.npy')!r})); "
            "print(time.perf_counter() - t)")
    fresh = statistics.median(float(subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout) for _ in range(repeat))
    size = os.path.getsize(path)
    print("\n## MLP 784-64-10, batch 100 (medians)\n")
    print("| | load_model | load_model + first predict | later predicts |")
    print("|---|---|---|---|")
    for name, (load, first, again) in rows:
        print(f"| {name} | {load * 1e3:.2f} ms | {first * 1e3:.2f} ms | {again * 1e3:.3f} ms |")
    print(f"\n- fresh process, import knetflow + load_model + first predict: {fresh * 1e3:.0f} ms")
    print(f"- file: {size:,} bytes for {nbytes:,} bytes of params "
          f"(overhead {(size - nbytes) / nbytes:.1%})")


def fuzz(n):
    """n byte-level mutations behind recomputed checksums, plus truncations and flips."""
    from tests.serialize.common import sample_file, with_crc

    sample = sample_file()
    rs = np.random.RandomState(12345)
    outcomes = {"loaded": 0, "FormatError": 0}
    start = time.perf_counter()
    for k in range(n):
        data = bytearray(sample)
        mode = k % 3
        if mode == 0:
            data = data[:rs.randint(0, len(data))]
        else:
            for pos in rs.randint(32 if mode == 2 else 0, len(data), rs.randint(1, 6)):
                data[pos] = rs.randint(0, 256)
        data = with_crc(bytes(data)) if mode == 2 and len(data) >= 32 else bytes(data)
        try:
            kf.serialize.loads(data)
            outcomes["loaded"] += 1
        except kf.FormatError:
            outcomes["FormatError"] += 1
    print(f"\n## fuzz: {n} mutated files in {time.perf_counter() - start:.1f} s: {outcomes}; "
          f"no other exception")
    examples = max(n // 10, 200)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/serialize/test_fuzz.py", "-k", "arbitrary or edited"],
                         cwd=ROOT, capture_output=True, text=True, check=False,
                         env={**os.environ, "KNETFLOW_FUZZ_EXAMPLES": str(examples)})
    verdict = "all passed" if run.returncode == 0 else "FAILED:\n" + run.stdout[-3000:]
    print(f"- hypothesis (arbitrary bytes, msgpack trees, edited graphs), {examples} examples "
          f"each, in {time.perf_counter() - start:.1f} s: {verdict}")


def kill(directory, n):
    from tests.serialize import crash

    start = time.perf_counter()
    result = crash.trials(os.path.join(directory, "kill"), n, seed=7)
    print(f"\n## kill test: {result} in {time.perf_counter() - start:.1f} s; every "
          f"checkpoint left after every kill loaded with consistent contents")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", action="append", default=None,
                        help="where to write (repeatable; default: beside the repository, "
                        "on its disk, and /dev/shm when it exists)")
    parser.add_argument("--fuzz", type=int, default=0)
    parser.add_argument("--kill", type=int, default=0)
    args = parser.parse_args(argv)
    places = args.dir or [ROOT] + (["/dev/shm"] if os.path.isdir("/dev/shm") else [])
    directory = tempfile.mkdtemp(prefix="kf-bench-", dir=places[0])
    try:
        latency(directory, args.repeat)
        for place in places if args.mb else []:
            where = tempfile.mkdtemp(prefix="kf-bench-", dir=place)
            try:
                throughput(where, args.mb, args.repeat)
            finally:
                shutil.rmtree(where, ignore_errors=True)
        if args.fuzz:
            fuzz(args.fuzz)
        if args.kill:
            os.makedirs(os.path.join(directory, "kill"))
            kill(directory, args.kill)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
