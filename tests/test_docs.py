"""The documentation: its examples run and say what they print, and the site builds with -W.

The slow tests run every page's ``python`` blocks (in one subprocess, so that
examples registering models cannot leak into this session) and the Sphinx build
itself; the fast ones check the machinery: block extraction, output checking,
the offline inventories, and that every convention and command is documented.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import posixpath
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(
    p for p in DOCS.rglob("*.md") if not ({"_build", "_generated"} & set(p.relative_to(DOCS).parts))
)


def _load(path: Path) -> ModuleType:
    """Import a docs helper by path, without putting docs/ on sys.path."""
    name = f"_resnetzoo_docs_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


snippets = _load(DOCS / "_ext" / "zoo_snippets.py")
inventories = _load(DOCS / "_scripts" / "make_inventories.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(
        RESNETZOO_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg"
    )
    return env


# ------------------------------------------------------------------ block extraction
PAGE = textwrap.dedent(
    """\
    # Title

    ```python
    x = 1
    ```

    % docs-test: skip (needs the network)
    ```python
    download()
    ```

    ````{load-report-example}
    :ok: false
    :expect: a;b
    report = make()
    ```python
    nested fence, still the same block
    ```
    ````

    ```{cli-run} resnetzoo list 'resnet5*'
    :exit-code: 1
    open("f", "w")
    ```

    ```bash
    not python
    ```
    """
)


def test_code_blocks_finds_kinds_options_skips_and_nested_fences() -> None:
    blocks = snippets.code_blocks(PAGE)
    assert [b.kind for b in blocks] == ["python", "python", "load-report-example", "cli-run"]
    assert blocks[0].code == "x = 1" and blocks[0].skip is None and blocks[0].lineno == 3
    assert blocks[1].skip == "(needs the network)"
    report = blocks[2]
    assert report.options == {"ok": "false", "expect": "a;b"}
    assert report.code.startswith("report = make()") and "nested fence" in report.code
    assert blocks[3].argument == "resnetzoo list 'resnet5*'"
    assert blocks[3].options == {"exit-code": "1"} and blocks[3].code == 'open("f", "w")'


def test_run_checked_compares_printed_lines_with_comments() -> None:
    code = textwrap.dedent(
        """\
        value = 41 + 1  # a comment on a silent statement is not checked
        print(value)  # 42: the answer
        for i in range(2):
            print(i)
        # 0
        # 1
        print("no comment")
        print(value + 1)  # 42
        """
    )
    problems = snippets.run_checked(code, filename="page.md", first_line=10, namespace={})
    assert problems == ["line 17 prints '43', the page says '42'"]


def test_run_checked_tracebacks_point_into_the_page() -> None:
    with pytest.raises(ZeroDivisionError) as info:
        snippets.run_checked(
            "x = 1\ny = x / 0\n", filename="docs/page.md", first_line=20, namespace={}
        )
    frame = info.traceback[-1]
    assert frame.path == Path("docs/page.md") or str(frame.path) == "docs/page.md"
    assert frame.lineno + 1 == 21  # pytest's line numbers are 0-based


class _Report:
    ok = False
    convention = "torchvision"

    def __str__(self) -> str:
        return "summary\nHints:\n  - this checkpoint looks like resnet101"


def test_report_problems_checks_each_option() -> None:
    assert (
        snippets.report_problems(_Report(), {"ok": "false", "expect": "looks like resnet101"}) == []
    )
    problems = snippets.report_problems(
        _Report(), {"ok": "true", "convention": "mmpretrain", "expect": "summary; not there"}
    )
    assert problems == [
        "report.ok is False, the page says True",
        "detected convention 'torchvision', the page says 'mmpretrain'",
        "the report does not contain 'not there'",
    ]
    assert "LoadReport" in snippets.report_problems(None, {})[0]


def test_run_command_runs_the_installed_main_in_a_temp_dir(tmp_path: Path) -> None:
    result = snippets.run_command("resnetzoo list 'resnet18*'", setup="open('marker', 'w').close()")
    assert result.exit_code == 0 and "resnet18" in result.output
    assert not (Path.cwd() / "marker").exists()
    with pytest.raises(ValueError, match="unknown program"):
        snippets.run_command("ls -l")


# ------------------------------------------------------------------ coverage of the guides
def test_every_convention_has_a_load_report_example() -> None:
    from resnetzoo.remap.conventions import CONVENTIONS

    shown = {
        block.options.get("convention")
        for page in PAGES
        for block in snippets.code_blocks(page.read_text(encoding="utf-8"))
        if block.kind == "load-report-example"
    }
    missing = [c.name for c in CONVENTIONS if c.name not in shown]
    assert not missing, (
        f"add a load-report-example with :convention: for {missing} to docs/guides/loading.md"
    )


def test_every_cli_command_has_a_section() -> None:
    from resnetzoo.cli import build_parser

    parser = build_parser()
    commands = [
        name
        for action in parser._actions
        if hasattr(action, "choices") and isinstance(action.choices, dict)
        for name in action.choices
    ]
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert commands, "the parser has no subcommands?"
    assert "{argparse-help} resnetzoo.cli:build_parser" in text
    undocumented = [c for c in commands if f"resnetzoo {c}" not in text]
    assert not undocumented, f"docs/cli.md has no example of: {undocumented}"


def test_skipped_blocks_are_few_and_say_why() -> None:
    skipped = [
        (page.name, block.lineno, block.skip)
        for page in PAGES
        for block in snippets.code_blocks(page.read_text(encoding="utf-8"))
        if block.kind == "python" and block.skip is not None
    ]
    ran = sum(
        1
        for page in PAGES
        for b in snippets.code_blocks(page.read_text(encoding="utf-8"))
        if b.kind == "python" and b.skip is None
    )
    assert all(reason.strip("() ") not in ("", "marked") for _, _, reason in skipped), skipped
    assert len(skipped) * 4 <= ran, f"most examples should run; skipped: {skipped}"


# ------------------------------------------------------------------ offline inventories
@pytest.mark.parametrize("site", sorted(inventories.INVENTORIES))
def test_committed_inventory_is_what_the_script_writes(site: str) -> None:
    inventory = inventories.INVENTORIES[site]
    expected = inventories.render(inventory, inventories.build_entries(inventory))
    committed = (DOCS / "_inventories" / f"{site}.inv").read_bytes()
    assert committed == expected, "run: python docs/_scripts/make_inventories.py"


@pytest.mark.parametrize("site", sorted(inventories.INVENTORIES))
def test_inventory_is_valid_and_links_to_the_real_site(site: str) -> None:
    sphinx_inventory = pytest.importorskip("sphinx.util.inventory")
    data = (DOCS / "_inventories" / f"{site}.inv").read_bytes()
    header, _, body = data.partition(b"zlib.\n")
    assert b"# Sphinx inventory version 2" in header
    lines = zlib.decompress(body).decode().splitlines()
    base = {
        "python": "https://docs.python.org/3/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "torchvision": "https://docs.pytorch.org/vision/stable/",
    }[site]
    reader = sphinx_inventory.InventoryFile
    if hasattr(reader, "loads"):  # Sphinx >= 8.2
        loaded = reader.loads(data, uri=base)
    else:
        loaded = reader.load(io.BytesIO(data), base, posixpath.join)
    items = loaded.data if hasattr(loaded, "data") else loaded
    uris = [item.uri for per_type in items.values() for item in per_type.values()]
    assert len(uris) == len(lines) and all(uri.startswith(base) and "#" in uri for uri in uris)


def test_inventory_entries_exist_in_the_installed_packages() -> None:
    for inventory in inventories.INVENTORIES.values():
        for name, _, _ in inventory.names:
            inventories.resolve_object(name)  # raises LookupError for a stale name
    with pytest.raises(LookupError):
        inventories.resolve_object("torch.nn.NoSuchLayer")


# ------------------------------------------------------------------ the slow ones
@pytest.fixture(scope="module")
def page_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("docs-run") / "results.json"
    cmd = [
        sys.executable,
        str(DOCS / "_ext" / "zoo_snippets.py"),
        "--docstrings",
        "--json",
        str(out),
        *map(str, PAGES),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    if not out.exists():
        pytest.fail(f"the docs runner crashed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return {r["page"]: r for r in json.loads(out.read_text())}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run_and_print_what_they_say(
    page_results: dict[str, dict], page: Path
) -> None:
    result = page_results[str(page)]
    assert not result["failures"], "\n".join(result["failures"])


@pytest.mark.slow
def test_docstring_examples_run(page_results: dict[str, dict]) -> None:
    failures = {
        name: r["failures"]
        for name, r in page_results.items()
        if name.startswith("docstrings:") and r["failures"]
    }
    assert not failures, "\n".join(f"{name}:\n" + "\n".join(f) for name, f in failures.items())


@pytest.mark.slow
def test_sphinx_build_passes_with_warnings_as_errors(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    out = tmp_path / "html"
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "\n".join(warnings) or proc.stderr[-4000:]

    from resnetzoo.weights import list_pretrained

    weights_page = (out / "guides" / "pretrained.html").read_text(encoding="utf-8")
    assert all(spec.name in weights_page for spec in list_pretrained()), (
        "the weights table misses a record"
    )
    api_pages = "".join(p.read_text(encoding="utf-8") for p in (out / "api").glob("*.html"))
    for site in (
        "https://docs.pytorch.org/docs/stable/generated/torch.nn.Module.html",
        "https://docs.python.org/3/library/",
    ):
        assert site in api_pages, f"no intersphinx link to {site}"
    assert list((out / "_images").glob("blocks*.svg")) and list(
        (out / "_images").glob("network*.svg")
    )
