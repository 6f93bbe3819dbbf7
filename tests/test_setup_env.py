"""scripts/setup_env.py, the setup both README commands run: what it decides to install for
each state of the machine (present, absent, wrong commit, local build), read from real
installed distributions and real requirement files."""

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    "setup_env", os.path.join(ROOT, "scripts", "setup_env.py")
)
setup_env = importlib.util.module_from_spec(_spec)
sys.modules["setup_env"] = setup_env  # dataclasses look their module up
_spec.loader.exec_module(setup_env)

PINNED = "02b5c4e295e990042a714712c21dc79b731e8833"


def test_pinned_commit_is_read_from_the_requirement_file(tmp_path):
    url, commit = setup_env.pinned_detectron2()
    assert url == "https://github.com/facebookresearch/detectron2.git"
    assert len(commit) == 40 and int(commit, 16) >= 0
    bad = tmp_path / "r.txt"
    bad.write_text("detectron2\n")
    with pytest.raises(ValueError, match="expected 'detectron2 @ git\\+URL@COMMIT'"):
        setup_env.pinned_detectron2(str(bad))


@pytest.mark.parametrize(
    "have,action",
    [
        (setup_env.Installed(), "install"),  # absent
        (setup_env.Installed("0.6", PINNED, "https://github.com/x/detectron2.git"), "keep"),
        (setup_env.Installed("0.6", PINNED[:12], "file:///mirror"), "keep"),  # short hash
        (
            setup_env.Installed("0.6", "0" * 40, "https://github.com/x/detectron2.git"),
            "reinstall",
        ),  # another commit
        (setup_env.Installed("0.6", None, "file:///home/me/detectron2"), "use"),  # local build
        (setup_env.Installed("0.6"), "use"),  # no install record at all
    ],
)
def test_detectron2_decision(have, action):
    got, why = setup_env.detectron2_action(have, PINNED)
    assert got == action, why
    if action == "use":
        assert "using it as it is" in why
    if action == "reinstall":
        assert "not the pinned" in why


def test_installed_reads_the_real_detectron2():
    """This machine's Detectron2 (installed by the setup, from git) has its commit recorded
    and is the pinned one."""
    have = setup_env.installed("detectron2")
    assert have.version is not None
    action, why = setup_env.detectron2_action(have, setup_env.pinned_detectron2()[1])
    assert action in ("keep", "use"), why
    assert setup_env.installed("surely-not-a-package-name-xyz") == setup_env.Installed()


def test_missing_requirements(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text(
        "# a comment\n"
        "pytest   # present\n"
        "torch>=1.0\n"
        "torch<0.1          # present, wrong version\n"
        "surely-not-a-package-name-xyz\n"
        "pytest; python_version < '3'   # marker false: skipped\n"
    )
    assert setup_env.missing_requirements(str(req)) == [
        "torch<0.1",
        "surely-not-a-package-name-xyz",
    ]
    # the project's own requirements are satisfied on a set-up machine
    assert setup_env.missing_requirements() == []


def test_turbo_install_is_recognised(tmp_path):
    here = setup_env.Installed("0.2.0", url="file://" + ROOT, editable=True)
    assert setup_env.turbo_is_this_checkout(here)
    assert not setup_env.turbo_is_this_checkout(here, str(tmp_path))
    assert not setup_env.turbo_is_this_checkout(setup_env.Installed("0.2.0"))


def test_dry_run_on_this_machine_installs_nothing():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "setup_env.py"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "the registry packages of requirements.txt are installed" in out.stdout
    assert "pip" not in out.stdout.replace("pip's", "")
