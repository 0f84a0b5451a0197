"""The per-clone ``.venv`` of ``tools/setup_env.sh`` (``tools/link_env.sh``): the tools run from
a checkout without PYTHONPATH and without installing anything into the shared environment."""

import os
import subprocess
import sys

import pytest

import ct_lesion_d2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(ct_lesion_d2.__file__)))


def shared_environment():
    """The prefix of the environment whose packages this interpreter uses."""
    marker = os.path.join(sys.prefix, "shared-environment")
    if os.path.isfile(marker):
        with open(marker) as f:
            return f.read().strip()
    return sys.prefix


@pytest.fixture(scope="module")
def clone_venv(tmp_path_factory):
    shared = shared_environment()
    if not os.path.isfile(os.path.join(shared, "pyvenv.cfg")):
        pytest.skip(f"{shared} is not a venv (not set up by tools/setup_env.sh)")
    venv = tmp_path_factory.mktemp("clone") / ".venv"
    subprocess.run(
        ["bash", os.path.join(REPO, "tools", "link_env.sh"), shared, str(venv), REPO],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv


def no_pythonpath():
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_clone_venv_imports_this_checkout_and_the_shared_packages(clone_venv):
    code = "import ct_lesion_d2, detectron2, torch; print(ct_lesion_d2.__file__)"
    result = subprocess.run(
        [str(clone_venv / "bin" / "python"), "-c", code],
        cwd="/",
        env=no_pythonpath(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == os.path.join(REPO, "ct_lesion_d2", "__init__.py")
    # the venv holds no package of its own: only the .pth that chains the two
    site = next((clone_venv / "lib").glob("python*/site-packages"))
    assert sorted(os.listdir(site)) == ["ct_lesion_d2_env.pth"]


def test_tools_run_from_the_checkout_without_pythonpath(clone_venv):
    result = subprocess.run(
        [str(clone_venv / "bin" / "python"), "tools/train_net.py", "--help"],
        cwd=REPO,
        env=no_pythonpath(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--overwrite" in result.stdout and "--num-machines" in result.stdout


def test_link_env_replaces_an_old_symlink(clone_venv, tmp_path):
    link = tmp_path / ".venv"
    os.symlink(shared_environment(), link)
    subprocess.run(
        ["bash", os.path.join(REPO, "tools", "link_env.sh"), shared_environment(), str(link), REPO],
        check=True,
        capture_output=True,
    )
    assert not link.is_symlink() and (link / "bin" / "python").exists()
    assert os.path.isdir(shared_environment())  # the shared environment itself is untouched
