"""scripts/setup_env.py, the setup both README commands run: which environment it sets up
(in place, the checkout's .venv, the running interpreter's own PyTorch and Detectron2 as they
are) and what it installs there for each state of the machine (present, absent, another
commit, local build), read from real interpreters, installed distributions and requirement
files."""

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
            "use",
        ),  # another commit: never replaced
        (setup_env.Installed("0.6", None, "file:///home/me/detectron2"), "use"),  # local build
        (setup_env.Installed("0.6"), "use"),  # no install record at all
    ],
)
def test_detectron2_decision(have, action):
    got, why = setup_env.detectron2_action(have, PINNED)
    assert got == action, why
    if action == "use":
        assert "using it as it is" in why
    if have.commit == "0" * 40:
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
    # a working PyTorch used as it is: its lines are never installed
    assert setup_env.missing_requirements(str(req), skip=("torch",)) == [
        "surely-not-a-package-name-xyz"
    ]
    # the project's own requirements are satisfied on a set-up machine
    assert setup_env.missing_requirements() == []
    assert setup_env.missing_requirements(setup_env.NO_DEPS_REQUIREMENTS) == []


def test_turbo_install_is_recognised(tmp_path):
    here = setup_env.Installed("0.2.0", url="file://" + ROOT, editable=True)
    assert setup_env.turbo_is_this_checkout(here)
    assert not setup_env.turbo_is_this_checkout(here, str(tmp_path))
    assert not setup_env.turbo_is_this_checkout(setup_env.Installed("0.2.0"))


def test_environment_choice(tmp_path):
    """--in-place wins; then the checkout's .venv where it exists; then this interpreter,
    whose PyTorch and Detectron2 work, as it is."""
    where, why = setup_env.choose_environment(True, str(tmp_path / "none"))
    assert where == "in-place" and sys.executable in why
    venv = tmp_path / "venv"
    python = setup_env.venv_python(str(venv))
    os.makedirs(os.path.dirname(python))
    open(python, "w").close()
    assert setup_env.choose_environment(False, str(venv))[0] == "venv"
    where, why = setup_env.choose_environment(False, str(tmp_path / "none"))
    assert where == "existing" and "as they are" in why
    assert setup_env.working_stack().startswith("torch ")


def _setup(python, *args):
    return subprocess.run(
        [python, os.path.join(ROOT, "scripts", "setup_env.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_on_this_machine_installs_nothing():
    """This machine has everything: the setup uses this interpreter and installs nothing."""
    out = _setup(sys.executable, "--dry-run", "--print-python")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == sys.executable
    assert "as they are" in out.stderr
    assert "the registry packages of requirements.txt are installed" in out.stderr
    assert "pip" not in out.stderr.replace("pip's", "")


def test_dry_run_without_pytorch_chooses_a_new_venv(tmp_path):
    """An interpreter without PyTorch (a bare virtual environment): the pinned versions would
    go into the checkout's .venv, never into that interpreter."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    out = _setup(setup_env.venv_python(str(bare)), "--dry-run", "--print-python")
    assert out.returncode == 0, out.stderr
    if os.path.exists(setup_env.VENV):  # this checkout already has one: it is used
        assert "using the virtual environment" in out.stderr
    else:
        assert "no working PyTorch and Detectron2" in out.stderr
        assert "create the environment" in out.stderr
    assert out.stdout.strip().splitlines()[-1] == setup_env.venv_python()
