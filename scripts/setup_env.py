#!/usr/bin/env python
"""Install what is missing for turbo, and nothing else: the registry packages of
``requirements.txt``, Detectron2 at the commit ``requirements-detectron2.txt`` pins, and this
checkout (editable).

Detectron2 is not on PyPI: it is installed from its git repository, only when it is missing
or installed from another commit. A Detectron2 whose commit cannot be read (built from a local
checkout, say) is used as it is, with a note. On a machine that has everything, this takes
about a second. Standard library only: it runs before anything is installed::

    python scripts/setup_env.py            # install what is missing
    python scripts/setup_env.py --dry-run  # say what would be installed

``TURBO_DETECTRON2_URL`` replaces Detectron2's repository address (a mirror, a local clone).
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
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
# pip warns on every install as root (containers, CI); the setup's own lines say what it does
PIP_ENV = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}


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
    """What to do about Detectron2: ("keep" | "install" | "reinstall" | "use", why)."""
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
    return "reinstall", (
        f"Detectron2 is installed at commit {have.commit[:12]}, not the pinned {commit[:12]}"
    )


def missing_requirements(path: str = REQUIREMENTS) -> Optional[List[str]]:
    """Lines of ``path`` whose requirement is not satisfied, or None when that cannot be
    told (no ``packaging`` module yet)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return None
    missing = []
    with open(path) as f:
        for raw in f:
            line = raw.split("#")[0].strip()
            if not line:
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            have = installed(req.name).version
            if have is None or not req.specifier.contains(have, prereleases=True):
                missing.append(line)
    return missing


def turbo_is_this_checkout(have: Installed, root: str = ROOT) -> bool:
    """Whether the installed ``turbo`` is this checkout, editable."""
    return (
        have.editable
        and have.url is not None
        and os.path.realpath(have.url.removeprefix("file://")) == os.path.realpath(root)
    )


def _run(cmd: List[str], dry_run: bool, what: str) -> None:
    print(f"setup: {what}: {' '.join(cmd)}", flush=True)
    if dry_run:
        return
    if subprocess.run(cmd, env=PIP_ENV).returncode != 0:
        raise SystemExit(f"setup: could not {what} (see pip's message above)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="say what would be installed")
    args = p.parse_args(argv)

    missing = missing_requirements()
    if missing is None or missing:
        what = ", ".join(missing) if missing else "requirements.txt"
        _run(PIP + ["install", "-q", "-r", REQUIREMENTS], args.dry_run, f"install {what}")
    else:
        print("setup: the registry packages of requirements.txt are installed")

    url, commit = pinned_detectron2()
    url = os.environ.get("TURBO_DETECTRON2_URL", url)
    action, why = detectron2_action(installed("detectron2"), commit)
    print(f"setup: {why}")
    if action in ("install", "reinstall"):
        cmd = PIP + ["install", "-q", "--no-build-isolation", f"git+{url}@{commit}"]
        print(
            f"setup: Detectron2 is not on PyPI: building it from {url} at {commit[:12]} "
            "(a few minutes)",
            flush=True,
        )
        if not args.dry_run and subprocess.run(cmd, env=PIP_ENV).returncode != 0:
            raise SystemExit(
                f"setup: could not install Detectron2 from {url} at {commit[:12]} (is the "
                "network reachable? set TURBO_DETECTRON2_URL to a reachable mirror or clone)"
            )

    if turbo_is_this_checkout(installed("turbo")):
        print("setup: turbo is installed from this checkout")
    else:
        _run(
            PIP + ["install", "-q", "--no-build-isolation", "--no-deps", "-e", ROOT],
            args.dry_run,
            "install turbo from this checkout",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
