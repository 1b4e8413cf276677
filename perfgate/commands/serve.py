"""``perfgate serve PROFILE``: start vLLM exactly as the suite would (lint, doctor, model), then wait.

For `--vllm-url` sessions, `perfgate bench` and Locust against a profile's server; Ctrl-C, ``kill -INT``
(even from a script's background job, see perfgate/serving/sigint.py) or SIGTERM stops the whole process tree, and
if perfgate itself is killed (SIGKILL included) the server's watchdog stops it. ``--reap-stale`` first
stops perfgate servers leaked by runs that are gone (and only those); without a profile it only does that.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.core.progress import to_stderr
from perfgate.serving.gpu_holders import check_gpu_free, reap_stale
from perfgate.serving.sigint import restore_sigint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start vLLM with a launch profile (linted, KV-checked) and keep it up")
    p.add_argument("profile", nargs="?", help="launch profile (optional with --reap-stale)")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--log", type=Path, default=None, help="server log (default: results/serve-<profile>.log)")
    p.add_argument("--gpu-memory", default=None, help="GPU memory for the doctor when NVML cannot tell")
    p.add_argument("--ready-file", type=Path, default=None, help="write the base URL here once healthy")
    p.add_argument("--reap-stale", action="store_true",
                   help="first stop perfgate servers whose run is gone (leaked by a killed run), only those")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    restore_sigint()
    if args.reap_stale:
        reap_stale(lambda line: print(line, file=sys.stderr))
        if args.profile is None:
            return 0
    if args.profile is None:
        raise ConfigError("perfgate serve needs a profile", fix="perfgate serve PROFILE (profiles/ lists them), "
                                                                "or perfgate serve --reap-stale alone")
    from perfgate.core.hardware import parse_memory
    from perfgate.models import resolve_model
    from perfgate.serving.doctor import check as doctor_check
    from perfgate.serving.lint import lint_profile
    from perfgate.serving.profile import load_profile
    from perfgate.serving.server import VllmServer
    from perfgate.telemetry.nvml import detect_gpus

    profile = load_profile(args.profile)
    gpu_class = detect_gpus().gpu_class if profile.platform == "cuda" else "cpu"
    profile = load_profile(args.profile, gpu_class=gpu_class)
    check_gpu_free(profile)  # a held GPU fails in a second, naming its holders, before lint and doctor run
    lint_profile(profile).raise_if_problems()
    model_path = resolve_model(profile.model)
    doctor_check(profile, model_path, gpu_memory_gib=parse_memory(args.gpu_memory) if args.gpu_memory else None)
    log = args.log or Path("results") / f"serve-{profile.name}.log"
    # Each start stage (weights, compile, KV cache, ...) is a line on stderr as vLLM logs it.
    server = VllmServer(profile, model_path, log_path=log, port=args.port, progress=to_stderr)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting {profile.display_command(model_path)}", file=sys.stderr)
        server.start()
        took = server.wait_healthy()
        print(f"healthy after {took:.1f} s: {server.base_url} (model {profile.served_model_name}, "
              f"tokenizer {model_path}); Ctrl-C stops it", file=sys.stderr)
        print(server.base_url, flush=True)
        if args.ready_file:
            args.ready_file.write_text(server.base_url + "\n")
        while server.alive():
            time.sleep(1.0)
        print(f"vLLM exited; last lines of {log}:\n{server.log_tail(20)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
