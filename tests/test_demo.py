"""The demo (the README's main job) end to end on a small synthetic study."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from studyman.demo import default_protocol_path, run_demo
from studyman.protocol.loader import load_protocol


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], list[str]]:
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out, n_participants=60, seed=11)
    return out, result.outputs, result.notes


def test_demo_makes_every_output_it_lists(
    demo: tuple[Path, dict[str, Path], list[str]],
) -> None:
    _, outputs, notes = demo
    for name, path in outputs.items():
        assert path.exists(), name
    assert outputs["DSMB open report"].suffix == ".pdf"
    assert outputs["DSMB closed report"].suffix == ".pdf"
    assert any(note.endswith("records imported through the API") for note in notes)


def test_demo_keeps_the_allocation_out_of_the_blinded_side(
    demo: tuple[Path, dict[str, Path], list[str]],
) -> None:
    out, outputs, _ = demo
    protocol = load_protocol(default_protocol_path())
    blinded_tables = {p.stem for p in (outputs["snapshot (blinded)"] / "tables").iterdir()}
    unblinded_tables = {p.stem for p in (outputs["snapshot (unblinded)"] / "tables").iterdir()}
    assert protocol.arms.form not in blinded_tables
    assert protocol.arms.form in unblinded_tables
    open_html = next((out / "dsmb").glob("dsmb-open-*.html")).read_text(encoding="utf-8")
    for arm in protocol.arms.items:
        assert arm.name not in open_html
    # what holds the allocation is for its owner only
    for folder in (out / "unblinded", out / "generated"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_demo_rerun_raises_no_new_queries(
    demo: tuple[Path, dict[str, Path], list[str]],
) -> None:
    out, _, notes = demo
    first = next(note for note in notes if "findings; queries:" in note)
    assert " new," in first
    again = run_demo(out, n_participants=60, seed=11)
    second = next(note for note in again.notes if "findings; queries:" in note)
    assert "queries: 0 new, 0 re-opened, 0 closed" in second
