"""scripts/setup_env.py, the setup both README commands run: which environment it sets up
(in place, the checkout's .venv, the running interpreter's own PyTorch and Detectron2 as they
are) and what it installs there for each state of the machine (present, absent, another
commit, local build), read from real interpreters, installed distributions and requirement
files."""

import importlib.util
import os
import shutil
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
    """This machine is set up (whichever way the setup took: this interpreter's own stack, or
    the checkout's .venv on a fresh machine): the setup chooses the interpreter these tests
    run in and would install nothing."""
    out = _setup(sys.executable, "--dry-run", "--print-python")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == sys.executable, out.stderr
    assert "the registry packages of requirements.txt are installed" in out.stderr
    assert "Detectron2 is installed at the pinned commit" in out.stderr
    assert "turbo is installed from this checkout" in out.stderr
    assert "pip" not in out.stderr.replace("pip's", "")


def test_bounded_requirements_go_with_every_install(tmp_path):
    """Lines that cap a version are passed with every install, so that a dependency's newer
    minimum (PyTorch's setuptools>=77) cannot lift them (setuptools<81)."""
    req = tmp_path / "requirements.txt"
    req.write_text("torch==2.14.1\nsetuptools<81\nnumpy\nfvcore>=0.1.5,<0.1.6\nscipy>=1\n")
    assert setup_env.bounded_requirements(str(req)) == [
        "torch==2.14.1",
        "setuptools<81",
        "fvcore>=0.1.5,<0.1.6",
    ]
    assert setup_env.bounded_requirements(str(req), skip=("torch",))[0] == "setuptools<81"
    assert "setuptools<81" in setup_env.bounded_requirements()


def _copy_checkout(dest):
    """The files of this checkout that git tracks or would track (as a fresh clone has them,
    the large checkpoints left out), copied to ``dest``."""
    files = subprocess.run(
        ["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if rel.startswith("checkpoints/") or not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def test_fresh_checkout_sets_up_its_venv_and_passes_there(tmp_path):
    """The path a fresh machine takes: the setup finds the checkout's .venv, sets it up (turbo
    from that checkout) and names its interpreter, and the environment tests pass when run by
    that interpreter, as the second README command runs them after the first made the .venv.
    The .venv sees this machine's packages (--system-site-packages) instead of downloading
    PyTorch and building Detectron2 again; what the setup installs goes into the .venv."""
    checkout = tmp_path / "checkout"
    _copy_checkout(str(checkout))
    venv = checkout / ".venv"
    # without pip of its own: this machine's pip and setuptools serve it, as they are
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    script = str(checkout / "scripts" / "setup_env.py")
    out = subprocess.run(
        [sys.executable, script, "--print-python"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    python = setup_env.venv_python(str(venv))
    assert out.stdout.strip().splitlines()[-1] == python
    assert "using the virtual environment" in out.stderr
    assert "install turbo from this checkout" in out.stderr
    where = subprocess.run(
        [python, "-c", "import turbo; print(turbo.__file__)"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert where.stdout.strip().startswith(str(checkout)), where.stderr
    tests = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(checkout / "tests" / "test_setup_env.py"),
            "--deselect",
            "tests/test_setup_env.py::"
            + test_fresh_checkout_sets_up_its_venv_and_passes_there.__name__,
        ],
        capture_output=True,
        text=True,
        cwd=str(checkout),
        timeout=600,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


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
