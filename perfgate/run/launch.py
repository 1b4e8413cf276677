"""From a profile name to a healthy server: lint, doctor, model, launch, fingerprint.

Used by the pytest fixture and by ``perfgate`` commands that start servers (A/B). The finalizer is
registered before the process starts, and an interrupt during start-up stops the server itself (pytest
skips the finalizers of an interrupted fixture setup).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from perfgate._errors import PerfgateError, ServerError
from perfgate.core.hardware import parse_memory
from perfgate.models import resolve_model
from perfgate.run.session import PerfgateSession, ServerRecord
from perfgate.run.target import Target, environment_fingerprint
from perfgate.serving.builds import unavailable_reason
from perfgate.serving.doctor import check as doctor_check
from perfgate.serving.gpu_holders import check_gpu_free
from perfgate.serving.lint import lint_profile
from perfgate.serving.profile import load_profile
from perfgate.serving.server import RUN_ID_ENV, AttachedServer, VllmServer
from perfgate.telemetry.nvml import detect_gpus


class Unavailable(PerfgateError):
    """The profile cannot run on this machine (no GPU, other vLLM build): the test is skipped."""

    skip = True


def _gpus() -> tuple[str, list[dict]]:

    detection = detect_gpus()
    gpus = [{"index": g.index, "name": g.name, "memory_total_gib": round(g.memory_total_gib, 2),
             "power_limit_w": g.power_limit_w, "max_sm_clock_mhz": g.max_sm_clock_mhz,
             "driver": detection.driver_version} for g in detection.gpus]
    return detection.gpu_class, gpus


def launch_target(pg: PerfgateSession, name: str, add_finalizer: Callable[[Callable[[], None]], None], *,
                  python: str | None = None) -> Target:
    """A healthy server for profile ``name``. ``python``: the interpreter vLLM runs from (default: this one);
    its flags are linted against that interpreter's vLLM (an upgrade A/B runs two environments)."""

    profile = load_profile(name)
    if reason := unavailable_reason(profile.platform):
        raise Unavailable(reason, source=f"profile {name}")
    gpu_class, gpus = _gpus() if profile.platform == "cuda" else ("cpu", [])
    profile = load_profile(name, gpu_class=gpu_class)
    check_gpu_free(profile)  # a held GPU fails in a second, naming its holders, before lint and doctor run
    lint_profile(profile, python=python).raise_if_problems()
    model_path = resolve_model(profile.model)
    gpu_memory = None
    if pg.gpu_memory:

        gpu_memory = parse_memory(pg.gpu_memory)
    doctor_check(profile, model_path, gpu_memory_gib=gpu_memory)
    log_path = pg.path("servers", f"{name}.log")
    for n in range(2, 100):  # a second server of the same profile (A/B) keeps its own log
        if not log_path.exists():
            break
        log_path = pg.path("servers", f"{name}-{n}.log")
    server = VllmServer(profile, model_path, log_path=log_path, api_key=pg.api_key,
                        extra_env={RUN_ID_ENV: pg.run_id}, python=python or sys.executable, progress=pg.progress)
    add_finalizer(server.stop)
    record = ServerRecord(name, None, str(server.log_path), profile.display_command(model_path))
    pg.servers.append(record)
    try:
        server.start()
        record.healthy_after_s = server.wait_healthy()
    except ServerError as exc:
        record.error = exc.message
        raise
    except BaseException as exc:
        # Ctrl-C/SIGTERM during start-up. pytest does not run the finalizers of a fixture whose setup was
        # interrupted (KeyboardInterrupt is not a test outcome, so the fixture never gets a cached result
        # and its finish() returns early), so the server is stopped here, before the interrupt goes on.
        record.error = f"interrupted during start-up ({type(exc).__name__})"
        server.stop()
        raise
    target = Target(server=server, profile=name, served_model_name=profile.served_model_name,
                    tokenizer=model_path, gpu_class=gpu_class, api_key=pg.api_key, model_dir=model_path,
                    command_line=record.command_line, healthy_after_s=record.healthy_after_s)
    target.fingerprint = environment_fingerprint(target, gpus)
    return target


def attach_target(pg: PerfgateSession, name: str) -> Target:

    server = AttachedServer(pg.vllm_url or "", api_key=pg.api_key).check()
    profile = None
    if name != "attached":
        profile = load_profile(name)
    gpu_class, gpus = _gpus()
    served = profile.served_model_name if profile else server.model_ids[0]
    if served not in server.model_ids:
        raise ServerError(f"{server.base_url} serves {server.model_ids}, not '{served}' (profile {name})",
                          fix="attach with the profile the server was started with (--profile NAME)")
    tokenizer = resolve_model(profile.model) if profile else served
    target = Target(server=server, profile=name, served_model_name=served, tokenizer=tokenizer,
                    gpu_class=gpu_class, api_key=pg.api_key, model_dir=tokenizer if profile else None,
                    command_line=f"(attached to {server.base_url})")
    target.fingerprint = environment_fingerprint(target, gpus)
    pg.servers.append(ServerRecord(name, None, None, target.command_line))
    return target
