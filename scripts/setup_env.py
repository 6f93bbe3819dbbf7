#!/usr/bin/env python
"""Set up an environment for turbo, respecting the one you have: use a working PyTorch and
Detectron2 as they are; where the pinned versions would be installed, install them into a
virtual environment in this checkout (``.venv``, ignored by git) instead.

Which environment (the first that applies):

1. ``--in-place``: the interpreter running this script; what is missing is installed there
   (the registry packages of ``requirements.txt``, those of ``requirements-nodeps.txt``
   without their dependencies, Detectron2 at the commit ``requirements-detectron2.txt``
   pins), nothing installed is replaced.
2. ``.venv`` of this checkout, where an earlier run made it.
3. The running interpreter, when it has a working PyTorch with torchvision and a Detectron2:
   they are used as they are (a note says which versions); only other missing registry
   packages are installed beside them, and this checkout (editable).
4. Otherwise a new ``.venv`` in this checkout, set up as in 1.

Detectron2 is not on PyPI: it is built from its git repository, only where it is missing.
``TURBO_DETECTRON2_URL`` replaces that address (a mirror, a local clone). Standard library
only: it runs before anything is installed::

    python scripts/setup_env.py                  # set up; say which interpreter to use
    python scripts/setup_env.py --print-python   # ... and print its path last on stdout
    python scripts/setup_env.py --dry-run        # say what would be done
    python scripts/setup_env.py --in-place       # install into this interpreter, no .venv
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, "requirements.txt")
DETECTRON2_REQUIREMENT = os.path.join(ROOT, "requirements-detectron2.txt")
# registry packages whose own dependency pins are stale: installed with --no-deps
NO_DEPS_REQUIREMENTS = os.path.join(ROOT, "requirements-nodeps.txt")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
# pip warns on every install as root (containers, CI); the setup's own lines say what it does
PIP_ENV = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}
VENV = os.path.join(ROOT, ".venv")
# requirement names never installed into an environment whose working PyTorch is used as it is
TORCH_PAIR = ("torch", "torchvision")
# imports torch, torchvision (one of its operators: a mismatched pair fails here) and
# Detectron2, and prints their versions
_PROBE = (
    "import torch, torchvision, detectron2\n"
    "torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)\n"
    "print(torch.__version__, torchvision.__version__, detectron2.__version__)"
)


@dataclass(frozen=True)
class Installed:
    """What the machine has of one distribution: its version, and for a direct (git or
    local) install the commit it was built from and its address."""

    version: Optional[str] = None
    commit: Optional[str] = None
    url: Optional[str] = None
    editable: bool = False


def installed(name: str) -> Installed:
    """The installed distribution ``name`` (``Installed()`` when absent)."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return Installed()
    direct = dist.read_text("direct_url.json")
    info = json.loads(direct) if direct else {}
    return Installed(
        version=dist.version,
        commit=info.get("vcs_info", {}).get("commit_id"),
        url=info.get("url"),
        editable=bool(info.get("dir_info", {}).get("editable")),
    )


def pinned_detectron2(path: str = DETECTRON2_REQUIREMENT) -> Tuple[str, str]:
    """(repository address, commit) of the pinned Detectron2, from its requirement line
    ``detectron2 @ git+URL@COMMIT``."""
    with open(path) as f:
        lines = [x.split("#")[0].strip() for x in f]
    line = next(x for x in lines if x.startswith("detectron2"))
    m = re.fullmatch(r"detectron2\s*@\s*git\+(\S+)@([0-9a-f]{7,40})", line)
    if not m:
        raise ValueError(f"{path}: expected 'detectron2 @ git+URL@COMMIT', got {line!r}")
    return m.group(1), m.group(2)


def detectron2_action(have: Installed, commit: str) -> Tuple[str, str]:
    """What to do about Detectron2: ("keep" | "install" | "use", why). An installed
    Detectron2 is never replaced: one from another commit, or whose commit cannot be read, is
    used as it is, with a note."""
    if have.version is None:
        return "install", "Detectron2 is not installed"
    if have.commit is None:
        where = f" from {have.url}" if have.url else ""
        return "use", (
            f"Detectron2 {have.version} is installed{where} without a readable "
            f"commit (a local build?): using it as it is, untested against the "
            f"pinned {commit[:12]}"
        )
    if have.commit.startswith(commit) or commit.startswith(have.commit):
        return "keep", f"Detectron2 is installed at the pinned commit {commit[:12]}"
    return "use", (
        f"Detectron2 {have.version} is installed at commit {have.commit[:12]}, not the pinned "
        f"{commit[:12]}: using it as it is"
    )


def _requirements(path: str, skip: Tuple[str, ...]):
    """(line, Requirement) of each requirement of ``path`` that applies here (its marker
    holds), those naming a package of ``skip`` left out. Needs ``packaging``."""
    from packaging.requirements import Requirement

    with open(path) as f:
        for raw in f:
            line = raw.split("#")[0].strip()
            if not line:
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            if req.name.lower() not in skip:
                yield line, req


def missing_requirements(
    path: str = REQUIREMENTS, skip: Tuple[str, ...] = ()
) -> Optional[List[str]]:
    """Lines of ``path`` whose requirement is not satisfied (those naming a package of
    ``skip`` left out), or None when that cannot be told (no ``packaging`` module yet)."""
    try:
        import packaging.requirements  # noqa: F401
    except ImportError:
        return None
    missing = []
    for line, req in _requirements(path, skip):
        have = installed(req.name).version
        if have is None or not req.specifier.contains(have, prereleases=True):
            missing.append(line)
    return missing


def bounded_requirements(path: str = REQUIREMENTS, skip: Tuple[str, ...] = ()) -> List[str]:
    """Lines of ``path`` that cap a version (``<``, ``<=``, ``==``, ``~=``): passed with every
    install, so that pip keeps them while it satisfies the others (PyTorch asks for a newer
    setuptools than the ``setuptools<81`` Detectron2's model zoo needs)."""
    return [
        line
        for line, req in _requirements(path, skip)
        if any(s.operator in ("<", "<=", "==", "~=", "===") for s in req.specifier)
    ]


def turbo_is_this_checkout(have: Installed, root: str = ROOT) -> bool:
    """Whether the installed ``turbo`` is this checkout, editable."""
    return (
        have.editable
        and have.url is not None
        and os.path.realpath(have.url.removeprefix("file://")) == os.path.realpath(root)
    )


def say(message: str) -> None:
    """A line of the setup's own, on stderr (stdout may carry the interpreter's path)."""
    print(f"setup: {message}", file=sys.stderr, flush=True)


def _run(cmd: List[str], dry_run: bool, what: str) -> None:
    say(f"{what}: {' '.join(cmd)}")
    if dry_run:
        return
    # pip's own output goes to stderr too
    if subprocess.run(cmd, env=PIP_ENV, stdout=sys.stderr).returncode != 0:
        raise SystemExit(f"setup: could not {what} (see pip's message above)")


def venv_python(venv: str = VENV) -> str:
    """The interpreter of the virtual environment ``venv``."""
    return os.path.join(venv, "Scripts" if os.name == "nt" else "bin", "python")


def working_stack(python: str = sys.executable) -> Optional[str]:
    """ "torch X, torchvision Y, Detectron2 Z" when ``python`` imports a working PyTorch and
    torchvision pair and Detectron2; else None."""
    if not all(installed(n).version for n in TORCH_PAIR + ("detectron2",)):
        return None  # what is not installed cannot work: no need to start an interpreter
    out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    torch, vision, d2 = out.stdout.split()[-3:]
    return f"torch {torch}, torchvision {vision}, Detectron2 {d2}"


def choose_environment(in_place: bool, venv: str = VENV) -> Tuple[str, str]:
    """("in-place" | "venv" | "existing", why): where the setup installs (module docstring)."""
    if in_place:
        return "in-place", f"installing what is missing into {sys.executable} (--in-place)"
    if os.path.exists(venv_python(venv)):
        return "venv", f"using the virtual environment {venv} of this checkout"
    stack = working_stack()
    if stack is not None:
        return "existing", (
            f"using {sys.executable} with its {stack} as they are (nothing of them is replaced)"
        )
    return "venv", (
        f"{sys.executable} has no working PyTorch and Detectron2: installing the pinned "
        f"versions into a new virtual environment, {venv}"
    )


def install_here(dry_run: bool, keep_torch: bool) -> None:
    """Install what is missing into the running interpreter; with ``keep_torch`` its
    PyTorch and torchvision are left as they are."""
    skip = TORCH_PAIR if keep_torch else ()
    missing = missing_requirements(skip=skip)
    if missing is None:  # requirement lines are read with 'packaging': install it first
        _run(PIP + ["install", "-q", "packaging"], dry_run, "install packaging")
        missing = [] if dry_run else missing_requirements(skip=skip)
    if missing:
        kept = [x for x in bounded_requirements(skip=skip) if x not in missing]
        _run(PIP + ["install", "-q"] + missing + kept, dry_run, f"install {', '.join(missing)}")
    else:
        say("the registry packages of requirements.txt are installed")
    no_deps = missing_requirements(NO_DEPS_REQUIREMENTS) or []
    if no_deps:
        _run(
            PIP + ["install", "-q", "--no-deps"] + no_deps,
            dry_run,
            f"install {', '.join(no_deps)} without their dependencies",
        )

    url, commit = pinned_detectron2()
    url = os.environ.get("TURBO_DETECTRON2_URL", url)
    action, why = detectron2_action(installed("detectron2"), commit)
    say(why)
    if action == "install":
        cmd = PIP + ["install", "-q", "--no-build-isolation", f"git+{url}@{commit}"]
        cmd += bounded_requirements(skip=skip)  # its own dependencies must not move them
        say(f"Detectron2 is not on PyPI: building it from {url} at {commit[:12]} (a few minutes)")
        if not dry_run and subprocess.run(cmd, env=PIP_ENV, stdout=sys.stderr).returncode != 0:
            raise SystemExit(
                f"setup: could not install Detectron2 from {url} at {commit[:12]} (is the "
                "network reachable? set TURBO_DETECTRON2_URL to a reachable mirror or clone)"
            )

    if turbo_is_this_checkout(installed("turbo")):
        say("turbo is installed from this checkout")
    else:
        _run(
            PIP + ["install", "-q", "--no-build-isolation", "--no-deps", "-e", ROOT],
            dry_run,
            "install turbo from this checkout",
        )
    broken = [] if dry_run else missing_requirements(skip=skip)
    if broken:  # an install replaced what an earlier one had satisfied
        raise SystemExit(f"setup: after installing, these requirements do not hold: {broken}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be done")
    p.add_argument(
        "--in-place", action="store_true", help="install into this interpreter, no .venv"
    )
    p.add_argument(
        "--print-python", action="store_true", help="print the interpreter to use, last on stdout"
    )
    args = p.parse_args(argv)

    where, why = choose_environment(args.in_place)
    say(why)
    python = sys.executable
    if where == "venv":
        python = venv_python()
        if not os.path.exists(python):
            _run([sys.executable, "-m", "venv", VENV], args.dry_run, "create the environment")
        if os.path.exists(python):  # set it up (with --dry-run: say what that would do)
            cmd = [python, os.path.abspath(__file__), "--in-place"]
            cmd += ["--dry-run"] if args.dry_run else []
            if subprocess.run(cmd, stdout=sys.stderr).returncode != 0:
                raise SystemExit(f"setup: could not set up {VENV}")
    else:
        install_here(args.dry_run, keep_torch=where == "existing")
    if args.print_python:
        print(python)
    else:
        say(f"use {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
