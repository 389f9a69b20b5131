"""Load files as a victim of a hostile file would: memory capped, code execution watched.

    python tests/serialize/guarded.py MANIFEST.json REPORT.json

MANIFEST is a JSON list of cases `{"name", "load", "path", "options"}`, run in
order in this one process. `load` says how: "model" (`kf.load_model(path)`),
"mmap" (`kf.load(path, mmap=True)`), "checkpoint"
(`kf.load_checkpoint(path, 1, **options)`, `path` being the prefix), "state"
(`load_state(path)`), or a probe of the guard itself: "probe-memory"
(allocate more than the limit) and "probe-pickle" (unpickle an object).

Before the first case the address space is limited (RLIMIT_AS) to `LIMIT`, or
to what the process uses after importing knetflow plus `HEADROOM` if that is
more (the files claim gigabytes and more), and an audit hook starts
recording events that run code or start processes. Writes REPORT.json:
`{"limit": bytes, "results": {name: {"error", "message", "events"}}}`, where
`error` is the exception's type name (null when the file loaded) and `events`
the audit events seen during that case, less the imports of modules on disk.
"""

from __future__ import annotations

import json
import os
import resource
import sys

LIMIT = 2**30
HEADROOM = 512 * 2**20
#: audit events of running code or starting programs (docs.python.org, "Audit events table")
WATCHED = frozenset({
    "exec", "compile", "pickle.find_class", "subprocess.Popen", "os.system", "os.exec",
    "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "ctypes.dlopen", "socket.connect",
})

_seen: list = []
_armed = False


def _hook(event: str, args: tuple) -> None:
    if _armed and event in WATCHED:
        if event == "exec":
            what = getattr(args[0], "co_filename", type(args[0]).__name__)
        elif event == "compile":
            what = args[1] if len(args) > 1 else "?"
        else:
            what = repr(args)[:200]
        _seen.append((event, str(what)))


def _code_from_file(event: str, what: str) -> bool:
    # importing a module runs its code: that code is a file on disk, not the loaded file's
    return event in ("exec", "compile") and os.path.isfile(what)


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _run(case: dict):
    import knetflow as kf
    from knetflow.serialize import load_state

    load, path, options = case["load"], case.get("path"), case.get("options", {})
    if load == "model":
        return kf.load_model(path)
    if load == "mmap":
        return kf.load(path, mmap=True)
    if load == "checkpoint":
        return kf.load_checkpoint(path, 1, **options)
    if load == "state":
        return load_state(path)
    if load == "probe-memory":
        return bytearray(resource.getrlimit(resource.RLIMIT_AS)[0])
    if load == "probe-pickle":
        import fractions
        import pickle

        return pickle.loads(pickle.dumps(fractions.Fraction(1, 3)))
    raise ValueError(f"unknown load {load!r}")


def main(manifest: str, report: str) -> None:
    global _armed
    import warnings

    import knetflow  # noqa: F401 - imported before the limit is measured

    warnings.simplefilter("ignore")  # allow_missing warns; results are what matters here
    with open(manifest) as f:
        cases = json.load(f)
    limit = max(LIMIT, _address_space() + HEADROOM)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    sys.addaudithook(_hook)
    results = {}
    for case in cases:
        _seen.clear()
        _armed = True
        error = message = None
        try:
            _run(case)
        except Exception as e:  # noqa: BLE001 - every outcome is reported to the test
            error, message = type(e).__name__, str(e)[:2000]
        finally:
            _armed = False
        events = [f"{event} {what}" for event, what in _seen if not _code_from_file(event, what)]
        results[case["name"]] = {"error": error, "message": message, "events": events}
    with open(report, "w") as f:
        json.dump({"limit": limit, "results": results}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
