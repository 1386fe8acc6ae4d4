"""The wheel carries its demo; worker processes never import a ``studyman`` from the current folder.

How the fresh environment is made: the wheel is built from a copy of the sources with the
project venv's own build backend (``pip wheel --no-build-isolation``: no network), then
installed into a new venv made with ``python -m venv --without-pip``. That venv reaches the
project venv's dependencies through one ``.pth`` line naming the project venv's site-packages.
A path line in a ``.pth`` file adds the folder to ``sys.path`` but does not run the ``.pth``
files inside it, so the project's editable install (a ``.pth`` hook there) stays out: the new
venv sees only the installed wheel's ``studyman``, which comes first on its ``sys.path``. The
new venv's own python runs pip (found through that line), so the ``studyman`` script it writes
starts that python. Every command runs from an empty temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
# What a source tree needs to build the wheel (pyproject's readme and license-files included).
SOURCES = (
    "pyproject.toml", "setup.py", "LICENSE", "README.md", "studyman", "protocols", "analysis"
)  # fmt: skip
STUDY = "protocols/cbt-adjunct"


def _environment() -> dict[str, str]:
    """The caller's environment without anything that would decide ``sys.path`` for the test."""
    environment = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONSAFEPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONNOUSERSITE"):
        environment.pop(name, None)
    return environment


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=timeout
    )


def _install(wheel: Path, venv: Path) -> tuple[Path, Path]:
    """Install *wheel* into a new venv that reaches the project venv's dependencies.

    Returns
    -------
    tuple of Path
        The venv's python and its site-packages.
    """
    made = _run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent, timeout=60
    )
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=venv, timeout=30,
        ).stdout.strip()
    )  # fmt: skip
    (site_packages / "studyman-test-dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
    )
    install = _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        cwd=venv, timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return python, site_packages


@dataclass(frozen=True)
class Installed:
    wheel: Path
    build_log: str
    python: Path
    studyman: Path
    site_packages: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = base / "dist"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(source)],
        cwd=base, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("studyman-*.whl")

    python, site_packages = _install(wheel, base / "venv")
    return Installed(
        wheel=wheel,
        build_log=build.stdout + build.stderr,
        python=python,
        studyman=python.with_name("studyman"),
        site_packages=site_packages,
    )


def test_wheel_carries_the_reference_study_its_plan_and_the_plan_lock(
    installed: Installed,
) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for folder in ("protocols", "analysis"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(ROOT).as_posix()
                assert f"studyman/_reference/{relative}" in names, relative
    assert "studyman/_reference/analysis/sap.lock.json" in names
    assert "studyman/reporting/templates/dsmb.html.j2" in names
    assert "studyman/py.typed" in names
    # every module of the package, and no byte code
    for path in (ROOT / "studyman").rglob("*.py"):
        assert path.relative_to(ROOT).as_posix() in names, path
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_declares_the_spdx_licence_and_builds_without_warnings(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        text = wheel.read(metadata).decode()
        licence = [name for name in wheel.namelist() if name.endswith("dist-info/licenses/LICENSE")]
        assert licence, "LICENSE is not in the wheel's dist-info"
        assert "Apache License" in wheel.read(licence[0]).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "License-File: LICENSE" in text
    # setuptools prints its deprecations (the licence table, licence classifiers) as *Warning
    assert re.findall(r"\w*Warning\b", installed.build_log) == []


def test_installed_wheel_runs_the_demo_from_an_empty_folder(
    installed: Installed, tmp_path: Path
) -> None:
    where = _run(
        [str(installed.python), "-c",
         "import studyman; from studyman.protocol.reference import default_plan_path, "
         "default_protocol_path; print(studyman.__file__); print(default_protocol_path()); "
         "print(default_plan_path())"],
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    package, study, plan = (Path(line) for line in where.stdout.splitlines())
    # the installed package's own copy, not the checkout
    assert package.is_relative_to(installed.site_packages)
    assert study == installed.site_packages / "studyman" / "_reference" / STUDY
    assert plan == installed.site_packages / "studyman" / "_reference" / "analysis" / "sap.yaml"
    shipped_lock = plan.with_name("sap.lock.json")
    lock_before = shipped_lock.read_bytes()
    assert lock_before == (ROOT / "analysis" / "sap.lock.json").read_bytes()

    empty = tmp_path / "empty"
    empty.mkdir()
    demo = _run(
        [str(installed.studyman), "demo", "--out", "X", "--participants", "40"],
        cwd=empty, timeout=240,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = empty / "X"
    assert sorted(path.name for path in empty.iterdir()) == ["X"]
    assert (out / "validation" / "queries.csv").is_file()
    assert (out / "unblinded" / "analysis" / "report.html").is_file()
    assert (out / "unblinded" / "analysis" / "results" / "summary.csv").is_file()
    assert list((out / "dsmb").glob("dsmb-open-*.html"))
    assert list((out / "unblinded" / "dsmb").glob("dsmb-closed-*.html"))
    assert (out / "redcap-project" / "data_dictionary.csv").is_file()
    # the demo reads the shipped plan and never writes into the installed package
    assert shipped_lock.read_bytes() == lock_before


def test_analyze_workers_ignore_a_studyman_folder_in_the_current_directory(
    tmp_path: Path,
) -> None:
    from studyman.analysis.lock import lock_sap
    from studyman.protocol.loader import load_protocol
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    protocol = load_protocol(ROOT / STUDY)
    trial = generate_trial(protocol, n_participants=40, seed=13)
    trial.records.to_csv(tmp_path / "records.csv", index=False)
    trial.randomization.to_csv(tmp_path / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol,
        tmp_path / "records.csv",
        ROOT / STUDY / "redcap" / "data_dictionary.csv",
        tmp_path / "snapshots",
        name="s1",
    ).path
    # the reference plan with few imputations: the test is about where workers import from
    text = (ROOT / "analysis" / "sap.yaml").read_text(encoding="utf-8")
    text = text.replace("imputations: 100", "imputations: 4").replace(
        "imputations: 20", "imputations: 2"
    )
    sap = tmp_path / "sap.yaml"
    sap.write_text(text, encoding="utf-8")
    lock_sap(sap)

    # A folder holding a studyman/ that must never be imported (a stale checkout, say).
    folder = tmp_path / "checkout"
    (folder / "studyman").mkdir(parents=True)
    (folder / "studyman" / "__init__.py").write_text(
        'raise RuntimeError("the studyman/ of the current folder was imported")\n',
        encoding="utf-8",
    )
    script = Path(sys.executable).with_name("studyman")
    assert script.is_file(), f"no studyman script beside {sys.executable}: run `make install`"
    result = _run(
        [str(script), "analyze", "--sap", str(sap), "--snapshot", str(snapshot),
         "--randomization", str(tmp_path / "randomization.csv"), "--out", str(tmp_path / "out"),
         "--workers", "2"],
        cwd=folder, timeout=240,
    )  # fmt: skip
    assert "current folder was imported" not in result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "out" / "report.html").is_file()
    assert (tmp_path / "out" / "results" / "summary.csv").is_file()


def test_a_damaged_installation_names_what_is_missing(installed: Installed, tmp_path: Path) -> None:
    python, site_packages = _install(installed.wheel, tmp_path / "venv")
    embedded = site_packages / "studyman" / "_reference"
    (embedded / "analysis" / "sap.yaml").unlink()
    plan = _run(
        [str(python), "-c",
         "from studyman.protocol.reference import default_plan_path; default_plan_path()"],
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert plan.returncode == 1
    assert f"{embedded / 'analysis' / 'sap.yaml'}: the embedded analysis plan is missing" in (
        plan.stderr
    )

    shutil.rmtree(embedded / "protocols")
    empty = tmp_path / "empty"
    empty.mkdir()
    demo = _run(
        [str(python.with_name("studyman")), "demo", "--out", "X", "--participants", "10"],
        cwd=empty, timeout=60,
    )  # fmt: skip
    assert demo.returncode != 0
    lines = (demo.stdout + demo.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "the embedded reference study is missing" in lines[0]
    assert str(embedded / STUDY / "protocol.yaml") in lines[0]
    assert "Traceback" not in demo.stderr
