#!/usr/bin/env python
"""The README's two commands from a fresh clone of this checkout, timed: ``bash
scripts/main.sh`` then ``bash scripts/run_tests.sh``, run with ``--python`` as the machine's
``python3`` (a bare interpreter takes the fresh-machine path: the setup builds ``.venv``).
Writes their wall times, the last lines of their output and the machine they ran on as a
Markdown page. Standard library only: it runs before anything is installed::

    python3 scripts/fresh_clone.py --python /usr/bin/python3 --output docs/results/fresh_clone.md
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("bash scripts/main.sh", "bash scripts/run_tests.sh")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter taken as python3")
    p.add_argument("--output", default="", help="write the page here (default: print it)")
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    return p.parse_args(argv)


def has_stack(python: str) -> bool:
    probe = "import torch, torchvision, detectron2"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def run(command: str, cwd: str, python: str):
    """(seconds, exit status, output) of ``command`` in ``cwd``, its output also shown."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=cwd,
        env={**os.environ, "PYTHON": python},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line.rstrip("\n"))
    return time.perf_counter() - start, proc.wait(), lines


def main(argv=None) -> int:
    args = parse_args(argv)
    bare = not has_stack(args.python)
    where = tempfile.mkdtemp(prefix="turbo-fresh-")
    clone = os.path.join(where, "turbo")
    subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
    commit = subprocess.run(
        ["git", "-C", clone, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows, tails, failed = [], [], False
    for command in COMMANDS:
        seconds, status, lines = run(command, clone, args.python)
        failed |= status != 0
        rows.append(f"| `{command}` | {seconds / 60:.1f} min | {status} |")
        tail = [x for x in lines if x.strip()][-4:]
        tails += [f"`{command}`, its last lines:", "", "```", *tail, "```", ""]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python "
        f"{platform.python_version()} ({args.python}: "
        + ("no PyTorch and Detectron2, so the setup built `.venv`" if bare else "with the stack")
        + ")"
    )
    page = "\n".join(
        [
            "# The README's two commands from a fresh clone",
            "",
            f"`python3 scripts/fresh_clone.py --python PYTHON` at commit {commit}, on {machine}.",
            "",
            "| command | wall time | exit status |",
            "|---|---|---|",
            *rows,
            "",
            *tails,
        ]
    )
    print(page)
    if args.output:
        with open(args.output, "w") as f:
            f.write(page)
    if args.keep:
        print(f"the clone: {clone}")
    else:
        shutil.rmtree(where, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
