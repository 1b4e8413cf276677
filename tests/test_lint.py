"""Profile lint against the real installed vLLM's argument parser (read through a subprocess, cached)."""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from perfgate._errors import LintError, PerfgateError, VllmNotInstalledError
from perfgate.cli import main
from perfgate.serving import _vllm_argspec
from perfgate.serving.lint import check_argv, lint_argv, lint_profile
from perfgate.serving.profile import load_profile

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
SEED = ("vllm serve Qwen/Qwen3-4B-Instruct-2507 --max-model-len 262144 --gpu-memory-utilization 0.9 "
        "--max-num-seqs 256 --max-num-batched-tokens 4096 --block-size 16 --scheduling-policy fcfs "
        "--dtype bfloat16 --kv-cache-dtype auto --num-gpu-blocks 16384 --num-swapped-blocks 0 "
        "--batching-strategy continuous --scheduler-delay-factor 0.05 --enforce-eager False")
SEED_BAD = {"--num-gpu-blocks", "--num-swapped-blocks", "--batching-strategy", "--scheduler-delay-factor",
            "--enforce-eager"}


@pytest.fixture(scope="module", autouse=True)
def spec_cache(tmp_path_factory):
    """A private cache: the first lint of the module dumps the real parser (a cold run), the rest read it."""
    cache = tmp_path_factory.mktemp("perfgate-cache")
    old = os.environ.get("PERFGATE_CACHE_DIR")
    os.environ["PERFGATE_CACHE_DIR"] = str(cache)
    _vllm_argspec._MEMO.clear()
    spec = _vllm_argspec.load_arg_spec()
    yield spec
    _vllm_argspec._MEMO.clear()
    if old is None:
        os.environ.pop("PERFGATE_CACHE_DIR", None)
    else:
        os.environ["PERFGATE_CACHE_DIR"] = old


def write_profile(tmp_path: Path, body: str, name: str = "mine") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


def test_seed_command_line_names_exactly_the_five_bad_flags(spec_cache):
    report = lint_argv(shlex.split(SEED))
    assert not report.ok
    assert {p.flag for p in report.problems} == SEED_BAD
    for problem in report.problems:
        if problem.flag == "--enforce-eager":
            assert problem.value == "False" and "takes no value" in problem.message
        else:  # unknown flags: the closest *real* flag is named
            assert problem.suggestion in spec_cache.by_option, problem
            assert problem.suggestion in str(problem)
    # The rendered report has one line per problem, each led by a bad flag; no good flag is blamed.
    problem_lines = report.render().splitlines()[1:]
    assert len(problem_lines) == 5
    assert {line.split()[0] for line in problem_lines} == SEED_BAD


def test_num_gpu_blocks_is_caught_although_argparse_would_take_it_as_an_abbreviation():
    (problem,) = lint_argv(["vllm", "serve", "M", "--num-gpu-blocks", "16384"]).problems
    assert problem.suggestion == "--num-gpu-blocks-override"
    assert "abbreviation" in problem.message


def test_check_argv_raises_lint_error_listing_every_problem():
    with pytest.raises(LintError) as info:
        check_argv(shlex.split(SEED))
    assert {p.flag for p in info.value.problems} == SEED_BAD
    assert all(flag in str(info.value) for flag in SEED_BAD)


@pytest.mark.parametrize("gpu_class", [None, "a10g", "l4", "h100"])
def test_shipped_optimized_profile_passes(gpu_class):
    report = lint_profile(load_profile("optimized", gpu_class=gpu_class, profiles_dir=PROFILES))
    assert report.ok, report.render()
    assert report.flags_checked >= 8


def test_every_shipped_profile_passes():
    for path in sorted(PROFILES.glob("*.toml")):
        report = lint_profile(load_profile(path.stem, profiles_dir=PROFILES))
        assert report.ok, report.render()


def test_typo_in_profile_names_file_line_and_suggestion(tmp_path):
    path = write_profile(tmp_path, """
        extends = "optimized"
        [vllm]
        max-num-seq = 128
        [gpu.a10g]
        max-num-batched-token = 2048
    """)
    report = lint_profile(load_profile(str(path), profiles_dir=PROFILES))
    by_flag = {p.flag: p for p in report.problems}
    assert set(by_flag) == {"--max-num-seq", "--max-num-batched-token"}
    assert by_flag["--max-num-seq"].source == f"{path.resolve()}:{line_of(path, 'max-num-seq')}"
    assert by_flag["--max-num-seq"].suggestion == "--max-num-seqs"
    # An override table is checked even when linting for another class, with its own line.
    assert by_flag["--max-num-batched-token"].source == f"{path.resolve()}:{line_of(path, 'max-num-batched-token')}"
    assert by_flag["--max-num-batched-token"].suggestion == "--max-num-batched-tokens"


def test_bad_values_are_reported(tmp_path, spec_cache):
    store_true = next(a["options"][0] for a in spec_cache.data["actions"] if a["action"] == "_StoreTrueAction")
    path = write_profile(tmp_path, f"""
        model = "synthetic:tiny"
        [vllm]
        {store_true[2:]} = false
        kv-cache-dtype = "fp9"
        max-model-len = "abc"
        gpu-memory-utilization = "most"
        port = 8000
    """)
    report = lint_profile(load_profile(str(path)))
    by_flag = {p.flag: p for p in report.problems}
    assert set(by_flag) == {f"--no-{store_true[2:]}", "--kv-cache-dtype", "--max-model-len",
                            "--gpu-memory-utilization", "--port"}
    assert "choices" in by_flag["--kv-cache-dtype"].message and "fp8" in by_flag["--kv-cache-dtype"].message
    assert "integer" in by_flag["--max-model-len"].message
    assert "perfgate sets this itself" in by_flag["--port"].message


def test_raw_forms_that_vllm_accepts_pass():
    argv = ["VLLM_USE_V1=1", "python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "M",
            "--max_model_len=4096", "--no-enforce-eager", "-tp", "1", "--compilation-config.mode", "3",
            "--max-model-len", "1k", "--dtype=bfloat16"]
    report = lint_argv(argv)
    assert report.ok, report.render()
    assert lint_argv([SEED.split(" --num-gpu-blocks")[0]]).ok  # one pasted string is split like a shell


def test_raw_form_problems_beyond_unknown_flags():
    report = lint_argv(["vllm", "serve", "M", "extra", "--enforce-eager=true", "--no-max-model-len",
                        "--tensor-parallel-size"])
    by_flag = {p.flag: p.message for p in report.problems}
    assert set(by_flag) == {"extra", "--enforce-eager", "--no-max-model-len", "--tensor-parallel-size"}
    assert "needs a value" in by_flag["--tensor-parallel-size"]


def test_not_a_vllm_command_is_bad_input():
    with pytest.raises(PerfgateError, match="not a vLLM command"):
        lint_argv(["docker", "run", "x"])


def test_second_lint_reads_the_cache_without_importing_vllm(spec_cache, monkeypatch):
    assert spec_cache.path is not None and spec_cache.path.is_file()
    assert spec_cache.version in spec_cache.path.name
    _vllm_argspec._MEMO.clear()

    def no_dump(*args, **kwargs):
        raise AssertionError("the parser was dumped again although it is cached")

    monkeypatch.setattr(_vllm_argspec, "_dump_spec", no_dump)
    assert lint_argv(["vllm", "serve", "M", "--max-model-len", "4096"]).ok


def test_missing_vllm_raises_with_the_fix(tmp_path):
    python = tmp_path / "python-without-vllm"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, so no vLLM
    python.chmod(0o755)
    with pytest.raises(VllmNotInstalledError, match="setup.sh"):
        lint_argv(["vllm", "serve", "M"], python=str(python), cache_dir=tmp_path / "cache")


def test_older_vllm_layout_is_read_from_openai_cli_args(tmp_path):
    """vLLM 0.25.x keeps make_arg_parser in vllm.entrypoints.openai.cli_args (GPU hosts run that)."""
    root = tmp_path / "site" / "vllm"
    files = {
        "__init__.py": "",
        "_version.py": "__version__ = version = '0.25.1'\n",
        "version.py": "from vllm._version import __version__\n",
        "utils/__init__.py": "from argparse import ArgumentParser as FlexibleArgumentParser\n",
        "entrypoints/__init__.py": "",
        "entrypoints/openai/__init__.py": "",
        "entrypoints/openai/cli_args.py": textwrap.dedent("""
            def make_arg_parser(parser):
                parser.add_argument("model_tag", nargs="?")
                parser.add_argument("--max-model-len", type=int)
                parser.add_argument("--enforce-eager", action="store_true")
                parser.add_argument("--num-gpu-blocks-override", type=int)
                return parser
        """),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    python = tmp_path / "python-old-vllm"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={root.parent} exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    spec = _vllm_argspec.load_arg_spec(str(python), cache_dir=tmp_path / "cache")
    assert spec.version == "0.25.1"
    assert spec.data["parser"] == "vllm.entrypoints.openai.cli_args.make_arg_parser"
    report = lint_argv(["vllm", "serve", "M", "--max-model-len", "x", "--enforce-eager", "False", "--dtype", "auto"],
                       python=str(python), cache_dir=tmp_path / "cache")
    assert {p.flag for p in report.problems} == {"--max-model-len", "--enforce-eager", "--dtype"}


def test_cli_exit_codes(capsys, tmp_path):
    assert main(["lint", "--", *shlex.split(SEED)]) == 1
    out = capsys.readouterr().out
    assert all(flag in out for flag in SEED_BAD)
    assert main(["lint", "optimized", "--profiles-dir", str(PROFILES)]) == 0
    typo = write_profile(tmp_path, 'extends = "optimized"\n[vllm]\nmax-num-seq = 128\n')
    assert main(["lint", str(typo), "--profiles-dir", str(PROFILES)]) == 1
    assert f"{typo.resolve()}:3" in capsys.readouterr().out
    assert main(["lint", "no-such-profile", "--profiles-dir", str(PROFILES)]) == 2
    assert "no profile named 'no-such-profile'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["python", "-m", "vllm.entrypoints.api_server", "--model", "Qwen/Qwen3-4B-Instruct-2507", "--max-num-seqs", "256"],
    ["python -m vllm.entrypoints.api_server --model Qwen/Qwen3-4B-Instruct-2507 --max-num-seqs 256"],  # pasted whole
])
def test_the_seeds_removed_api_server_module_is_flagged_naming_vllm_serve(argv, capsys):
    report = lint_argv(argv)
    problem = next(p for p in report.problems if "api_server" in p.flag)
    assert problem.flag == "python -m vllm.entrypoints.api_server"
    assert "removed from vLLM" in problem.message and "vllm serve" in problem.message
    assert "python -m vllm.entrypoints.openai.api_server" in problem.message
    assert main(["lint", "--", *argv]) == 1
    assert "vllm serve" in capsys.readouterr().out
    # the OpenAI server module perfgate itself launches is not flagged
    assert lint_argv(["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"]).ok
