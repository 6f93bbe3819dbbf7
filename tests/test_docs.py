"""The pages say what the code does, each number in one home: the README's results table is
the one ``docs/results/benchmark*.json`` give; every measured number quoted in the README and
``docs/*.md`` appears in the results page (or the code) it comes from; the parameters page
lists every key of ``TurboParams`` with its default and accepted range."""

import dataclasses
import glob
import os
import re

from conftest import ROOT

from turbo import config
from turbo.benchmark.report import HEADLINE_BEGIN, HEADLINE_END, headline_table
from turbo.build import get_turbo_cfg

README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "docs", "results")
# A measured number: two or more decimals (AP, ratios, ms), or any decimal quoted as a ratio
# ("1.5x") or a share ("12.5 %").
_MEASURED = re.compile(r"(?<![\w.])\d+\.\d+(?=x\b| ?%)|(?<![\w.])\d+\.\d{2,}(?![\w.])")


def _read(path):
    with open(path) as f:
        return f.read()


def _readme_block(text):
    return text.split(HEADLINE_BEGIN + "\n", 1)[1].split("\n" + HEADLINE_END, 1)[0]


def test_readme_results_table_is_written_from_docs_results():
    assert _readme_block(_read(README)) == headline_table(RESULTS), (
        "README's results table differs from docs/results: run python scripts/update_docs.py"
    )


def _sources():
    """Every number the results pages, the code and the configs hold, as written and rounded
    to 1, 2 and 3 decimals."""
    paths = glob.glob(os.path.join(RESULTS, "*.md")) + glob.glob(os.path.join(RESULTS, "*.json"))
    paths += glob.glob(os.path.join(ROOT, "turbo", "**", "*.py"), recursive=True)
    paths += [p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*"), recursive=True)]
    numbers = set()
    for p in filter(os.path.isfile, paths):
        for n in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", _read(p)):
            numbers.add(n.lstrip("-"))
            value = abs(float(n))
            numbers.update(f"{value:.{d}f}" for d in (1, 2, 3))
    return numbers


def unsourced_numbers(text: str, sources) -> list:
    """Measured numbers of a page that no source holds; code blocks, the README's generated
    results table and its model-zoo column (Detectron2's published numbers) left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"Python \d+\.\d+", "", text)  # versions are not measurements
    if HEADLINE_BEGIN in text:
        text = text.replace(_readme_block(text), "")
    kept = []
    for line in text.splitlines():
        if line.startswith("| ") and "`configs/" in line:  # a model families row: its last
            line = line.rsplit("|", 2)[0]  # cell is the model zoo's published numbers
        kept.append(line)
    return [n for n in _MEASURED.findall("\n".join(kept)) if n not in sources]


def test_every_measured_number_has_a_source():
    sources = _sources()
    pages = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    bad = {os.path.relpath(p, ROOT): unsourced_numbers(_read(p), sources) for p in pages}
    assert not any(bad.values()), f"numbers without a source in docs/results or the code: {bad}"
    # the check is not vacuous: a number changed on the page is caught
    assert unsourced_numbers("box AP 98.76 at 7.531x", sources) == ["98.76", "7.531"]


def _parameter_rows():
    """(key, default cell, accepted cell) of each row of the parameters page's key table."""
    text = _read(os.path.join(ROOT, "docs", "parameters.md"))
    rows = re.findall(r"^\| `([A-Z_.]+)` \| `([^`]*)` \| ([^|]*) \|", text, re.M)
    return {key: (default, accepted.strip()) for key, default, accepted in rows}


def _yacs_default(node, key):
    for part in key.split("."):
        node = node[part]
    return f'"{node}"' if isinstance(node, str) else repr(node)


def test_parameters_page_lists_every_key_with_its_default_and_range():
    rows = _parameter_rows()
    fields = [f.name for f in dataclasses.fields(config.TurboParams) if f.name != "soft_nms"]
    fields += ["soft_nms." + f.name for f in dataclasses.fields(config.SoftNMSParams)]
    assert sorted(rows) == sorted(f.upper() for f in fields)
    cfg = get_turbo_cfg().MODEL.TURBO
    for path in fields:
        default, accepted = rows[path.upper()]
        assert default == _yacs_default(cfg, path.upper()), path
        assert accepted == config._CHECKS[path][1], path
