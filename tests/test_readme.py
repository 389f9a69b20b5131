"""README.md's code runs as written.

Its ```python blocks run top to bottom in one namespace, as a reader pasting
them into one session would, followed by the `knetflow ...` commands of its
```sh blocks. They run in a subprocess, in a temporary directory: the blocks
set two CPU devices and write files (checkpoints, a model, x.npy), and
neither may leak into other tests. Tracebacks point at README.md's own lines.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Runs in the subprocess: argv[1] is README.md. Each block is compiled with
# README.md as its file name and its own line numbers, so an error says
# "README.md, line 57".
RUNNER = textwrap.dedent(r'''
    import re, shlex, sys
    path = sys.argv[1]
    text = open(path, encoding="utf-8").read()
    namespace = {"__name__": "__main__"}
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        first_line = text.count("\n", 0, m.start(1)) + 1
        source = "\n" * (first_line - 1) + m.group(1)
        exec(compile(source, path, "exec"), namespace)
    from knetflow.cli import main
    for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        for line in m.group(1).splitlines():
            if line.startswith("knetflow "):
                rc = main(shlex.split(line.split("#")[0])[1:])
                if rc != 0:
                    sys.exit(f"README command failed with status {rc}: {line}")
    print("README OK")
''')


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_readme_has_python_blocks():
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 3


@pytest.mark.timeout(300)
def test_readme_blocks_run_in_order_in_one_namespace(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("KNETFLOW_CPU_DEVICES", "KNETFLOW_SIM_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run([sys.executable, "-c", RUNNER, str(README)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (
        f"README.md's code failed:\n{result.stderr[-6000:]}\n--- stdout:\n{result.stdout[-2000:]}")
    assert "README OK" in result.stdout
    assert (tmp_path / "mlp.kf").exists() and (tmp_path / "y.npy").exists()


def test_readme_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# knetflow") and lines[1:3] == ["", "```sh"], lines[:3]
    commands = [line.split("#")[0].strip() for line in lines[3:5]]
    assert commands == ["make demo", "make test"] and lines[5] == "```", lines[:6]


def test_user_docs_stand_alone():
    """What users read names no file outside the repository (such as ../shared/)."""
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("knetflow", "examples", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py")) + sorted((ROOT / folder).rglob("*.md"))
    offenders = [str(f.relative_to(ROOT)) for f in files
                 if "../shared" in f.read_text(encoding="utf-8", errors="replace")]
    assert not offenders, f"these files point at ../shared: {offenders}"
    for name in ("DESIGN.md", "API.md", "FORMAT.md"):
        assert (ROOT / "docs" / name).exists(), name
        assert f"docs/{name}" in README.read_text(encoding="utf-8")
