"""Launch profiles: extends, GPU-class overrides, and errors that name the file, the line and the fix."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest

from perfgate._errors import ConfigError
from perfgate.cli import main
from perfgate.serving.profile import API_SERVER_MODULE, load_profile

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"


def write(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def line_of(path: Path, text: str, start: int = 1) -> int:
    lines = path.read_text().splitlines()
    return next(i for i in range(start, len(lines) + 1) if lines[i - 1].startswith(text))


@pytest.fixture
def family(tmp_path) -> Path:
    write(tmp_path, "base", """
        description = "base"
        model = "synthetic:tiny"
        served-model-name = "tiny"
        load-format = "dummy"
        [vllm]
        max-model-len = 4096
        dtype = "bfloat16"
        [env]
        A = "1"
    """)
    write(tmp_path, "child", """
        extends = "base"
        description = "child"
        [vllm]
        max-model-len = 8192
        enforce-eager = true
        enable-prefix-caching = false
        [env]
        B = "2"
        [gpu.a10g]
        max-model-len = 2048
    """)
    return tmp_path


def test_extends_merges_flags_env_and_fields(family):
    child = load_profile("child", profiles_dir=family)
    assert child.model == "synthetic:tiny" and child.description == "child"
    assert child.flags == {"max-model-len": 8192, "dtype": "bfloat16", "enforce-eager": True,
                           "enable-prefix-caching": False}
    assert child.env == {"A": "1", "B": "2"}
    assert child.flag_args() == ["--max-model-len", "8192", "--dtype", "bfloat16", "--enforce-eager",
                                 "--no-enable-prefix-caching"]
    # Inherited flags point at the parent's line, overridden ones at the child's.
    base, child_path = family / "base.toml", family / "child.toml"
    assert child.flag_sources["dtype"] == f"{base.resolve()}:{line_of(base, 'dtype')}"
    assert child.flag_sources["max-model-len"] == f"{child_path.resolve()}:{line_of(child_path, 'max-model-len')}"


def test_gpu_class_override_applies_only_to_that_class(family):
    path = (family / "child.toml").resolve()
    on_a10g = load_profile("child", gpu_class="a10g", profiles_dir=family)
    assert on_a10g.flags["max-model-len"] == 2048
    # The override's own line, not the [vllm] line that sets the same key earlier in the file.
    table = line_of(path, "[gpu.a10g]")
    assert on_a10g.flag_sources["max-model-len"] == f"{path}:{line_of(path, 'max-model-len', table)}"
    assert load_profile("child", gpu_class="h100", profiles_dir=family).flags["max-model-len"] == 8192
    assert load_profile("child", profiles_dir=family).gpu_overrides == {"a10g": {"max-model-len": 2048}}


def test_command_lines(family):
    child = load_profile("child", profiles_dir=family)
    argv = child.command("/models/tiny", port=8123, python="python3")
    assert argv[:3] == ["python3", "-m", API_SERVER_MODULE]
    assert argv[argv.index("--port") + 1] == "8123" and argv[argv.index("--model") + 1] == "/models/tiny"
    shown = shlex.split(child.display_command())
    assert shown[:3] == ["vllm", "serve", "synthetic:tiny"] and "--max-model-len" in shown


def test_missing_profile_lists_the_choices(family):
    with pytest.raises(ConfigError) as info:
        load_profile("nope", profiles_dir=family)
    assert "base" in str(info.value) and "child" in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_profile(str(family / "absent.toml"))


def test_bad_toml_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken", """
        model = "synthetic:tiny"
        [vllm]
        max-model-len = 4096
        dtype = bfloat16
    """)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert str(path) in str(info.value) and f"line {line_of(path, 'dtype')}" in str(info.value)


def test_unknown_field_names_line_and_allowed_fields(tmp_path):
    path = write(tmp_path, "typo", """
        model = "synthetic:tiny"
        served_model = "x"
    """)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    text = str(info.value)
    assert f"{path}:{line_of(path, 'served_model')}" in text and "served-model-name" in text


def test_inheritance_loop_and_missing_model_are_refused(tmp_path):
    write(tmp_path, "a", 'extends = "b"\nmodel = "synthetic:tiny"\n')
    write(tmp_path, "b", 'extends = "a"\n')
    with pytest.raises(ConfigError, match="loops"):
        load_profile("a", profiles_dir=tmp_path)
    write(tmp_path, "nomodel", "[vllm]\nmax-model-len = 1\n")
    with pytest.raises(ConfigError, match="no model"):
        load_profile("nomodel", profiles_dir=tmp_path)


def test_perfgate_profiles_lists_each_command_and_gpu_variants(capsys):
    assert main(["profiles", "--profiles-dir", str(PROFILES)]) == 0
    out = capsys.readouterr().out
    for path in PROFILES.glob("*.toml"):
        profile = load_profile(path.stem, profiles_dir=PROFILES)
        assert profile.display_command() in out
        for gpu_class in profile.gpu_overrides:
            variant = load_profile(path.stem, gpu_class=gpu_class, profiles_dir=PROFILES)
            assert f"on {gpu_class}: {variant.display_command()}" in out


def test_perfgate_profiles_reports_a_broken_file_and_goes_on(tmp_path, capsys):
    write(tmp_path, "good", 'model = "synthetic:tiny"\n')
    write(tmp_path, "bad", "model = \n")
    assert main(["profiles", "--profiles-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "bad: error" in out and "vllm serve synthetic:tiny" in out
