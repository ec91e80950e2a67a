"""A fixed handful of chaos seeds: the real command line against faults, holes and kills.

Each seed is a whole case of ``instarec.testing.chaos`` (origin, recorder process, checks);
a failure names the one command that reproduces it. The cases and the runner's own parts
(drawing, the hole and range arithmetic) are checked here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from instarec.testing.chaos import (
    FIELD_FAILURE_SEEDS,
    ChaosCase,
    draw_case,
    reproduce_command,
    run_case,
)
from instarec.testing.media import TestMedia

# Chosen to cover every shape, holes listed and omitted, a timeline far from 0 at 90 kHz, a
# retention limit, kill -9 with a resume, Ctrl+C, and fault mixes on media, init and manifest,
# while the whole list stays within a few minutes on two cores.
SEEDS = [21, 9, 24, 10, 16]


@pytest.mark.parametrize("seed", [*FIELD_FAILURE_SEEDS[:1], *SEEDS])
async def test_chaos_seed(
    seed: int, tmp_path: Path, test_media: TestMedia, constant_media: TestMedia
) -> None:
    case = draw_case(seed)
    media = constant_media if case.shape == "number_duration" else test_media
    result = await run_case(case, tmp_path / f"seed-{seed}", media=media)
    assert result.passed, result.report()


def test_field_failure_seed_draws_the_issue_case() -> None:
    assert FIELD_FAILURE_SEEDS, "no seed of the field failure listed"
    case = draw_case(FIELD_FAILURE_SEEDS[0])
    assert case.label == "field-failure"
    assert (case.duration, case.already, case.window, case.retention) == (600, 480, 5, None)
    assert case.gaps == (40, 41, 150)
    assert case.shape in ("instagram", "time")
    assert case.faults.total == pytest.approx(0.10)
    assert (case.faults.slow_min, case.faults.slow_max) == (2.0, 6.0)


def test_the_field_failure_is_drawn_in_both_shapes() -> None:
    shapes = {draw_case(seed).shape for seed in FIELD_FAILURE_SEEDS}
    assert shapes == {"instagram", "time"}


def test_a_seed_always_draws_the_same_case() -> None:
    assert [draw_case(s) for s in range(40)] == [draw_case(s) for s in range(40)]
    assert len({draw_case(s).line().split(" ", 1)[1] for s in range(40)}) > 30


def test_the_draw_reaches_every_shape_and_interruption() -> None:
    cases: list[ChaosCase] = [draw_case(s) for s in range(300)]
    assert {c.shape for c in cases} == {
        "instagram",
        "time",
        "number_timeline",
        "number_duration",
        "static",
    }
    assert {c.interruption for c in cases} == {"none", "kill", "sigint"}
    assert any(not c.gaps_listed and c.gaps for c in cases)
    assert any(c.timeline_offset > 0 and c.timescale == 90_000 for c in cases)
    assert any("manifest" in c.faults.kinds and c.faults.total > 0 for c in cases)
    assert any(c.retention is not None for c in cases)
    assert any(c.shape == "instagram" and not c.publish_frame_time for c in cases)


def test_a_failure_report_names_the_command_that_reproduces_it() -> None:
    assert reproduce_command(17) == "python -m instarec.testing.chaos --seed 17"
    line = draw_case(17).line()
    assert line.startswith("seed=17 ")
    assert "\n" not in line
