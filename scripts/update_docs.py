#!/usr/bin/env python
"""Write the README's results table from the benchmark results in docs/results/ (their one
home), between its markers; ``--check`` only says whether the README is up to date::

    python scripts/update_docs.py           # after re-running scripts/benchmark.py
    python scripts/update_docs.py --check   # exit 1 if the README's table differs
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
import sys

from turbo.benchmark.reference_models import REPO_ROOT
from turbo.benchmark.report import HEADLINE_BEGIN, HEADLINE_END, headline_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--readme", default=os.path.join(REPO_ROOT, "README.md"))
    p.add_argument("--results", default=os.path.join(REPO_ROOT, "docs", "results"))
    p.add_argument("--check", action="store_true", help="only check; exit 1 if it differs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with open(args.readme) as f:
        text = f.read()
    if text.count(HEADLINE_BEGIN) != 1 or text.count(HEADLINE_END) != 1:
        raise SystemExit(f"{args.readme}: expected one {HEADLINE_BEGIN!r} ... {HEADLINE_END!r}")
    head, rest = text.split(HEADLINE_BEGIN)
    _, tail = rest.split(HEADLINE_END)
    new = f"{head}{HEADLINE_BEGIN}\n{headline_table(args.results)}\n{HEADLINE_END}{tail}"
    if args.check:
        if new != text:
            print(f"{args.readme}: the results table differs from {args.results}", file=sys.stderr)
            return 1
        print(f"{args.readme}: the results table is that of {args.results}")
        return 0
    with open(args.readme, "w") as f:
        f.write(new)
    print(f"{args.readme}: results table written from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
