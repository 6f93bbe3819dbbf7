#!/usr/bin/env python
"""Detectron2's own model tests with the turbo heads standing in for the upstream ones.

In this process ``ROI_HEADS_REGISTRY`` builds ``TurboROIHeads`` for "StandardROIHeads" and
``TurboCascadeROIHeads`` for "CascadeROIHeads", and Detectron2's default config carries the
``MODEL.TURBO`` keys with the package defaults (``turbo.add_turbo_config``), as a user who
switches Turbo on in every config would have it. Then the model tests of a Detectron2 source
checkout run through pytest (``--tests``: ``tests/modeling``, ``test_export_torchscript.py``,
``test_model_analysis.py`` and ``test_model_zoo.py`` by default). Each failure is listed with
the last line of its error and marked "download" where the test needed the network (model-zoo
weights or files), which is out of Turbo's reach::

    python scripts/detectron2_tests.py --detectron2 /path/to/detectron2 \\
        --output docs/results/detectron2_tests.md
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import os
import re
import subprocess
import sys
import time

DEFAULT_TESTS = (
    "tests/modeling",
    "tests/test_export_torchscript.py",
    "tests/test_model_analysis.py",
    "tests/test_model_zoo.py",
)
# An error whose text matches this needed the network (model-zoo weights, files by URL).
_DOWNLOAD = re.compile(
    r"urlopen|URLError|HTTPError|ConnectionError|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|dl\.fbaipublicfiles|download",
    re.IGNORECASE,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--detectron2", required=True, help="a Detectron2 source checkout")
    p.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="under --detectron2")
    p.add_argument("--output", default="", help="write the result as a Markdown page here")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest")
    return p.parse_args(argv)


def stand_in() -> None:
    """Make every "StandardROIHeads" / "CascadeROIHeads" built from a config in this process
    the turbo heads, with ``MODEL.TURBO`` in every ``get_cfg()`` (global state: this program
    only)."""
    from detectron2.config import defaults
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY

    import turbo

    turbo.add_turbo_config(defaults._C)  # get_cfg() clones this node
    # fvcore's Registry has no public way to replace an entry: rebind it in its map
    ROI_HEADS_REGISTRY._obj_map["StandardROIHeads"] = turbo.TurboROIHeads
    ROI_HEADS_REGISTRY._obj_map["CascadeROIHeads"] = turbo.TurboCascadeROIHeads


class Outcomes:
    """A pytest plugin recording each test's outcome and the last line of its error."""

    def __init__(self):
        self.rows = {}  # nodeid -> (outcome, error text, its message in one line)

    @staticmethod
    def _error(report):
        """(error text, its message in one line) of a report."""
        text = str(report.longrepr or "")
        last = next((x.strip() for x in reversed(text.splitlines()) if x.strip()), "")
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None and crash.message:  # the exception's own message, not its frame
            last = crash.message.splitlines()[0]
        if report.skipped and isinstance(report.longrepr, tuple):
            last = str(report.longrepr[2])
        return text, last[:200]

    def pytest_collectreport(self, report):
        if report.failed:  # a test file that cannot be imported counts as a failed test
            self.rows[report.nodeid] = ("failed", *self._error(report))

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            if report.nodeid in self.rows and self.rows[report.nodeid][0] != "passed":
                return  # a teardown after a failed call: keep the call's error
            self.rows[report.nodeid] = (report.outcome, *self._error(report))


def classify(outcome: str, text: str) -> str:
    """ "passed", "skipped", "failed (download)" or "failed"."""
    if outcome in ("passed", "skipped"):
        return outcome
    return "failed (download)" if _DOWNLOAD.search(text) else "failed"


def report(rows, command: str, seconds: float, commit: str) -> str:
    counts = {}
    for outcome, text, _ in rows.values():
        kind = classify(outcome, text)
        counts[kind] = counts.get(kind, 0) + 1
    lines = [
        "# Detectron2's model tests with the turbo heads standing in",
        "",
        f"`{command}` (Detectron2 at {commit}, {seconds / 60:.1f} min on CPU): the turbo heads "
        "built for every `StandardROIHeads` and `CascadeROIHeads`, `MODEL.TURBO` at the "
        "package defaults.",
        "",
        f"{len(rows)} tests: "
        + ", ".join(
            f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "failed (download)", "skipped")
        )
        + ".",
        "",
    ]
    failed = [(n, r) for n, r in rows.items() if r[0] not in ("passed", "skipped")]
    if failed:
        lines += ["| test | result | error |", "|---|---|---|"]
        for name, (outcome, text, last) in sorted(failed):
            lines.append(f"| `{name}` | {classify(outcome, text)} | {last.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    root = os.path.abspath(args.detectron2)
    paths = [os.path.join(root, t) for t in args.tests]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"--detectron2 {root}: {missing[0]} does not exist (a source checkout?)")
    import pytest

    stand_in()
    outcomes = Outcomes()
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(root)  # Detectron2's tests import their helpers relative to the checkout
    try:
        pytest.main(["-q", "-p", "no:cacheprovider", *paths, *args.pytest_args], [outcomes])
    finally:
        os.chdir(cwd)
    seconds = time.perf_counter() - start
    git = subprocess.run(
        ["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    )
    commit = git.stdout.strip() or "an unknown commit"
    command = "python scripts/detectron2_tests.py --detectron2 DETECTRON2_CHECKOUT"
    page = report(outcomes.rows, command, seconds, commit)
    print(page)
    if args.output:
        with open(args.output, "w") as f:
            f.write(page)
    return 0 if not any(classify(r[0], r[1]) == "failed" for r in outcomes.rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
