"""timm's own model tests, run against resnetzoo: the timm drop-in contract, checked by timm.

timm's source distribution carries ``tests/test_models.py``. This test fetches the
sdist of the installed timm version from PyPI (with pip, which checks the file's hash
against the index), once per checkout into pytest's cache, and runs that file in a
subprocess with ``tests/peers/timm_shim.py``: the shim swaps ``timm.create_model`` and
``timm.list_models`` for resnetzoo's and keeps every assertion (see its docstring for
what it selects). Any failure means code written for timm breaks on resnetzoo models.

The representative architectures (a basic, a bottleneck, a ResNeXt and a D model) keep
this inside the CI budget; ``RESNETZOO_PEER_ARCHS=all`` runs all of them. Offline,
``RESNETZOO_SKIP_PEER_SUITES=1`` skips the test instead of failing it.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

SHIM_DIR = Path(__file__).parent / "peers"
# timm's per-model tests that every timm 1.0.x has, each run once per architecture. The
# check is derived from the downloaded file, not a count tied to one timm version: each of
# these that the file defines must have run for each selected architecture, so a shim that
# stopped selecting something fails, whatever timm version pyproject's timm>=1.0 resolves to.
CORE_TESTS = ("test_model_forward", "test_model_backward", "test_model_default_cfgs", "test_model_forward_features")
REPRESENTATIVE = ("resnet18", "resnet50", "resnext50_32x4d", "resnet50d")  # as tests/peers/timm_shim.py


def _selected_archs() -> list[str]:
    chosen = os.environ.get("RESNETZOO_PEER_ARCHS", "")
    if chosen == "all":
        import resnetzoo

        return resnetzoo.list_models()
    return [a.strip() for a in chosen.split(",") if a.strip()] or list(REPRESENTATIVE)


def _missing_core_items(test_file: Path, ran: list[str]) -> list[str]:
    """``core[arch]`` items the file defines that did not run (an arch may carry a ``.tag``)."""
    source = test_file.read_text(encoding="utf-8")
    defined = [name for name in CORE_TESTS if re.search(rf"^def {name}\(", source, re.MULTILINE)]
    assert defined, f"none of {CORE_TESTS} is in {test_file}: timm's test layout changed"
    return [
        f"{name}[{arch}]"
        for name in defined
        for arch in _selected_archs()
        if not any(re.fullmatch(rf"{name}\[(.*-)?{re.escape(arch)}(\.\w+)?(-.*)?\]", item) for item in ran)
    ]

pytestmark = pytest.mark.slow


def _download_sdist(package: str, version: str, dest: Path) -> Path:
    if os.environ.get("RESNETZOO_SKIP_PEER_SUITES") == "1":
        pytest.skip("RESNETZOO_SKIP_PEER_SUITES=1")
    cmd = [
        sys.executable, "-m", "pip", "download", f"{package}=={version}",
        "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check", "-d", str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(dest.glob(f"{package}-{version}.tar.gz"))
    if result.returncode != 0 or not archives:
        pytest.fail(
            f"could not download the {package} {version} sdist from PyPI (its tests are not in the "
            f"wheel): {result.stderr.strip()[-500:]}\nSet RESNETZOO_SKIP_PEER_SUITES=1 to skip offline.",
            pytrace=False,
        )
    return archives[0]


def _extract_tests(archive: Path, dest: Path) -> Path:
    """Unpack only ``tests/``, ``pyproject.toml`` and ``LICENSE``, never timm's own source.

    With the source beside the tests, pytest's rootdir import mode would put that copy
    of ``timm`` ahead of the installed one.
    """
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        wanted = [
            m for m in tar.getmembers()
            if (m.isfile() or m.isdir())
            and ".." not in Path(m.name).parts
            and (m.name.startswith(f"{top}/tests/") or m.name in (f"{top}/pyproject.toml", f"{top}/LICENSE"))
        ]
        # filter="data" where this Python has it (3.10.12+, 3.11.4+); the list above is safe either way.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=wanted, **safe)
    return dest / top


@pytest.fixture(scope="session")
def timm_tests(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    version = metadata.version("timm")
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir(f"timm-{version}-sdist")) if cache else tmp_path_factory.mktemp("timm-sdist")
    tests = root / f"timm-{version}"
    if not (tests / "tests" / "test_models.py").is_file():
        download = tmp_path_factory.mktemp("download")
        staging = _extract_tests(_download_sdist("timm", version, download), download / "x")
        shutil.rmtree(tests, ignore_errors=True)
        shutil.move(staging, tests)
    return tests


def test_timm_model_suite_passes_on_resnetzoo_models(timm_tests: Path, tmp_path: Path) -> None:
    report = tmp_path / "timm.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM_DIR), env.get("PYTHONPATH")]))
    # One thread, as this suite's conftest: timm's tests use small inputs, and two busy
    # cores shared by OpenMP's spinning threads make them ten times slower.
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "pytest", str(timm_tests / "tests" / "test_models.py"),
        "-p", "timm_shim", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(timm_tests),
        "-q", "-rfE", "-W", "ignore::FutureWarning", f"--junitxml={report}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert report.is_file(), f"timm's suite did not run:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    print(f"timm {metadata.version('timm')} tests/test_models.py on resnetzoo: {counts}")
    assert counts["failures"] == counts["errors"] == 0, f"{counts}\n{result.stdout[-6000:]}"
    assert counts["skipped"] == 0, f"{counts}\n{result.stdout[-3000:]}"
    ran = [case.get("name", "") for case in suite.iter("testcase")]
    missing = _missing_core_items(timm_tests / "tests" / "test_models.py", ran)
    assert not missing, f"the shim did not select {missing[:8]} ({len(missing)} in all); {counts}"
