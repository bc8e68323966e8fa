"""`publisher plan` against a measured build of the real SmolLM2 model: disk and peak memory within 10 %.

The demo recipe (with an importance matrix, two types) is built one stage group at a time, each in
a fresh process measured by ``os.wait4`` from a small launcher (the converter and llama-imatrix, run as children, are
charged to their stage), and every file the plan names is compared with the file the build wrote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.common import recipe_variant, require_llama_cpp, require_smollm2
from support.paths import REPO_ROOT

from publisher import plan
from publisher.recipe import load_recipe
from publisher.runtimes import llama_cpp

pytestmark = [pytest.mark.slow]

STAGE_GROUPS = (("fetch", "convert"), ("imatrix",), ("quantize",), ("smoke", "card"))
TOLERANCE = 0.10


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[plan.BuildPlan, Path, dict[str, int]]:
    """The plan, the build folder, and the peak RSS of each stage's process."""
    require_smollm2()
    require_llama_cpp()
    if llama_cpp.tool("llama-imatrix") is None:
        pytest.skip(f"llama-imatrix is not built in {llama_cpp.tools_dir()}; run `make tools`")
    root = tmp_path_factory.mktemp("plan")
    path = recipe_variant(
        root,
        "plan",
        {
            "quantize.types": ["Q4_K_M", "Q8_0"],
            "imatrix": {"chunks": 4, "context_length": 256},
            "smoke.quality.max_chunks": 2,
        },
    )
    workdir = root / "work"
    build_plan = plan.make_plan(load_recipe(path), workdir)
    peaks: dict[str, int] = {}
    for group in STAGE_GROUPS:
        cmd = [sys.executable, "-m", "publisher.cli", "build", str(path), "--workdir", str(workdir)]
        peak = _peak_rss([*cmd, "--stages", ",".join(group)], log=root / "logs" / f"{group[0]}.log")
        for stage in group:
            peaks[stage] = peak
    return build_plan, workdir / "plan", peaks


def _peak_rss(cmd: list[str], log: Path) -> int:
    """``run_measured`` from a small launcher process, not from pytest itself.

    Linux keeps the forking process's peak RSS in a child's ``ru_maxrss`` across exec, so a child
    forked straight from a large pytest process (1.6 GB in a full run) would report pytest's peak.
    """
    launcher = "import sys; from pathlib import Path; from bench.proc import run_measured; "
    launcher += "print(run_measured(sys.argv[2:], log=Path(sys.argv[1])).peak_rss_bytes)"
    done = subprocess.run(
        [sys.executable, "-c", launcher, str(log), *cmd], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return int(done.stdout.split()[-1])


def _close(planned: int, real: int) -> bool:
    return abs(planned - real) <= TOLERANCE * real


def test_every_planned_file_has_the_planned_size(measured: tuple[plan.BuildPlan, Path, dict[str, int]]) -> None:
    build_plan, build_dir, _ = measured
    sizes = {}
    for stage in build_plan.stages:
        for name, size in stage.files.items():
            sizes[name] = (size, (build_dir / name).stat().st_size)
    suffixes = {".F16.gguf", ".imatrix.gguf", ".imatrix.txt", ".Q4_K_M.gguf", ".Q8_0.gguf", ".logits.npy"}
    assert {
        next(s for s in suffixes if name.endswith(s)) for name in sizes if name.endswith(tuple(suffixes))
    } == suffixes
    big = {name: pair for name, pair in sizes.items() if pair[1] > 1_000_000}
    assert len(big) >= 4, sizes  # reference, two quants, reference logits
    print(f"\nplanned vs written bytes: {sizes}")
    wrong = {name: pair for name, pair in big.items() if not _close(*pair)}
    assert not wrong, f"planned vs written bytes off by more than 10 %: {wrong}"
    written = sum(real for _, real in sizes.values())
    assert _close(build_plan.disk, written), (build_plan.disk, written)
    matrix = next(pair for name, pair in sizes.items() if name.endswith(".imatrix.gguf"))
    assert _close(*matrix), matrix


def test_each_stage_peak_memory_is_within_ten_percent(
    measured: tuple[plan.BuildPlan, Path, dict[str, int]],
) -> None:
    build_plan, _, peaks = measured
    checked = {s.stage: (s.peak_memory, peaks[s.stage]) for s in build_plan.stages if s.stage in peaks}
    heavy = {stage: pair for stage, pair in checked.items() if stage in ("convert", "imatrix", "quantize", "smoke")}
    assert len(heavy) == 4, checked
    print(f"\nplanned vs measured peak RSS (MB): { {k: (p // 10**6, m // 10**6) for k, (p, m) in heavy.items()} }")
    off = {stage: pair for stage, pair in heavy.items() if stage != "smoke" and not _close(*pair)}
    assert not off, f"planned vs measured peak RSS off by more than 10 %: {off}"
    # The smoke stage's transformers child runs while the first model works, and how much of it coincides
    # with the stage's own peak depends on timing (593 to 644 MB measured against 660 planned): the plan
    # counts all of it, so the measured peak lies between the plan without the child and the plan, each
    # within 10 %.
    assert _brackets(*heavy["smoke"]), heavy["smoke"]
    assert _brackets(build_plan.peak_memory, max(peaks.values())), (build_plan.peak_memory, peaks)


def _brackets(planned: int, real: int) -> bool:
    """``real`` lies between the plan without the transformers child and the plan, each within 10 %."""
    return (planned - plan.TRANSFORMERS_CHILD) * (1 - TOLERANCE) <= real <= planned * (1 + TOLERANCE)
