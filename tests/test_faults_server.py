"""Fault matrix (issue 7), the server side: port taken (4), vLLM exits during start-up (6), never healthy (7),
binding (19, the command-line half; the socket half is in test_faults_session.py), and --vllm-url at a
server that is down or is not vLLM (20).

Rows 6 and 7 start real vLLM (CPU build) through the fixture in a child pytest; neither reaches healthy,
so they cost seconds of start-up each, not a full start. docs/faults.md maps every row to its tests.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from perfgate._errors import ServerError
from perfgate.serving.profile import load_profile
from perfgate.serving.server import AttachedServer, VllmServer, free_port

SERVER_TEST = """
import pytest
pytestmark = pytest.mark.cpu

def test_server_starts(vllm_server):
    pass
"""


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port on 127.0.0.1 with a listener on it (as another job's server would be)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


# --- row 4: port already in use ------------------------------------------------------------------------

def test_port_in_use_fails_before_launching(tmp_path: Path, occupied_port: int) -> None:
    """An explicit port that is taken: a clear error naming the port and the fix, and no process started."""
    server = VllmServer(load_profile("cpu-tiny"), "/nonexistent-model", log_path=tmp_path / "s.log",
                        port=occupied_port)
    with pytest.raises(ServerError) as err:
        server.start()
    assert f"port {occupied_port} on 127.0.0.1 is already in use" in str(err.value)
    assert "fix:" in str(err.value)
    assert server.proc is None and not (tmp_path / "s.log").exists()


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # raises if free_port handed out a taken port


@pytest.mark.cpu
@pytest.mark.slow
def test_port_taken_after_it_was_picked_shows_vllms_error(tmp_path: Path, occupied_port: int, fault_tools,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the pre-check cannot close: the port is taken between picking and vLLM's bind. Real vLLM
    exits at once; the error carries vLLM's own line and nothing is left running (rows 4 and 6)."""
    import perfgate.serving.server as server_mod
    from perfgate.models import resolve_model

    monkeypatch.setattr(server_mod, "free_port", lambda host="127.0.0.1": occupied_port)
    mark = f"port-race-{occupied_port}-{time.time_ns()}"
    server = VllmServer(load_profile("cpu-tiny"), resolve_model("synthetic:tiny"), log_path=tmp_path / "s.log",
                        extra_env={"PERFGATE_TEST_MARK": mark})
    server.start()
    try:
        with pytest.raises(ServerError) as err:
            server.wait_healthy(timeout_s=300)
    finally:
        server.stop()
    first_line = str(err.value).splitlines()[0]
    assert "vLLM exited with code" in first_line and "during start-up" in first_line
    assert "Address already in use" in first_line, str(err.value)  # vLLM's own words lead the message
    assert not fault_tools.marked_processes(mark)


# --- rows 6 and 7: exits during start-up; never healthy --------------------------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_startup_exit_and_startup_timeout_through_the_fixture(child_pytest, fault_tools) -> None:
    """Two profiles in one child session: one whose KV space this machine cannot give (vLLM refuses after
    loading the model), one whose start-up timeout is shorter than any start. Each test fails at setup with
    the cause, and the session leaves no process behind."""
    tiny_profile = fault_tools.tiny_profile
    big_kv = tiny_profile() + '[env]\nVLLM_CPU_KVCACHE_SPACE = "4096"\n'  # 4 TiB: more than any CI box
    child = child_pytest(SERVER_TEST, profiles={"fault-bigkv": big_kv,
                                                "fault-slow": tiny_profile(startup_timeout_s=3)})
    result = child.run("--profile", "fault-bigkv", "--profile", "fault-slow", timeout_s=420)

    exited = result.case("test_server_starts[fault-bigkv]")
    assert exited.outcome == "error", exited
    first = exited.message.strip().splitlines()[0]
    assert "vLLM exited with code" in first and "during start-up" in first, exited.message
    # vLLM's own refusal (platforms/cpu worker: "... is less than requested memory for kv ...") is shown.
    assert "less than requested memory for kv" in exited.message, exited.message
    assert "fix:" in exited.message

    slow = result.case("test_server_starts[fault-slow]")
    assert slow.outcome == "error", slow
    assert "vLLM was not healthy 3 s after launch" in slow.message, slow.message
    assert "startup-timeout-s" in slow.message  # the fix names the knob

    assert result.returncode == 1, result.output[-3000:]
    assert result.leftovers == {}, f"processes outlived the child session: {result.leftovers}"
    assert "left running at session end" not in result.output  # the child's own check found none either
    # The failed start is on record with the results, log path included.
    session = json.loads((result.results_dir / "session.json").read_text())
    errors = {s["profile"]: s["error"] for s in session["servers"]}
    assert "exited with code" in errors["fault-bigkv"] and "not healthy" in errors["fault-slow"]
    assert (result.results_dir / "servers" / "fault-bigkv.log").exists()


# --- row 19: the command line binds loopback unless the profile says otherwise ---------------------------

def test_servers_bind_loopback_unless_the_profile_says_otherwise(tmp_path: Path) -> None:
    default = load_profile("cpu-tiny")
    argv = VllmServer(default, "/m", log_path=tmp_path / "a.log", port=1234).command
    assert argv[argv.index("--host") + 1] == "127.0.0.1"

    (tmp_path / "cpu-tiny.toml").write_text((Path(default.files[0])).read_text())
    (tmp_path / "open.toml").write_text('extends = "cpu-tiny"\nhost = "0.0.0.0"\n')
    opened = VllmServer(load_profile("open", profiles_dir=tmp_path), "/m", log_path=tmp_path / "b.log", port=1234)
    assert opened.command[opened.command.index("--host") + 1] == "0.0.0.0"
    assert opened.base_url == "http://127.0.0.1:1234"  # clients still talk over loopback


def test_lint_refuses_host_and_port_in_vllm_flags(tmp_path: Path) -> None:
    """`host` can only be set as the profile's field, never smuggled in as a vLLM flag."""
    from perfgate.serving.lint import lint_profile

    (tmp_path / "cpu-tiny.toml").write_text(Path(load_profile("cpu-tiny").files[0]).read_text())
    (tmp_path / "sneaky.toml").write_text('extends = "cpu-tiny"\n[vllm]\nhost = "0.0.0.0"\nport = 8000\n')
    report = lint_profile(load_profile("sneaky", profiles_dir=tmp_path))
    flagged = {p.flag for p in report.problems}
    assert {"--host", "--port"} <= flagged, report.problems


# --- row 20: --vllm-url at a server that is down or is not vLLM ------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str]]] = {}

    def do_GET(self) -> None:  # http.server's name
        status, body = self.routes.get(self.path, (404, "not found"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_http():
    """Start a tiny local HTTP server answering ``routes`` ({path: (status, body)}); returns its URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(routes: dict[str, tuple[int, str]]) -> str:
        handler = type("H", (_Handler,), {"routes": routes})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


NOT_VLLM = {"/health": (200, "ok"), "/v1/models": (200, "<html>hello</html>"), "/metrics": (200, "")}
OPENAI_BUT_NOT_VLLM = {"/health": (200, "ok"), "/v1/models": (200, json.dumps({"data": [{"id": "m"}]})),
                       "/metrics": (200, "llamacpp:prompt_tokens_total 1\n")}


def test_attached_check_names_the_cause(fake_http) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    cases = {
        down: "cannot reach",
        fake_http(NOT_VLLM): "/v1/models is not an OpenAI model list: this is not a vLLM server",
        fake_http(OPENAI_BUT_NOT_VLLM): "/metrics has no vllm: metrics: this is not a vLLM server",
        fake_http({"/health": (503, "")}): "/health answered HTTP 503",
        fake_http({"/health": (200, ""), "/v1/models": (401, "")}): "wants an API key",
    }
    for url, cause in cases.items():
        with pytest.raises(ServerError) as err:
            AttachedServer(url).check(timeout_s=5)
        assert cause in str(err.value), (url, str(err.value))
        assert url in str(err.value) or "API key" in cause
        assert "fix:" in str(err.value)


def test_vllm_url_down_or_not_vllm_fails_at_session_start(child_pytest, fake_http) -> None:
    """Through the plugin: a usage error before any test runs, naming the URL and the fix."""
    source = SERVER_TEST + "\ndef test_unrelated():\n    pass\n"
    for url, cause in ((f"http://127.0.0.1:{free_port()}", "cannot reach"),
                       (fake_http(NOT_VLLM), "this is not a vLLM server")):
        result = child_pytest(source).run("--vllm-url", url, timeout_s=120)
        assert result.returncode == 4, result.output[-3000:]  # pytest's usage error
        assert cause in result.output and url in result.output and "fix:" in result.output, result.output[-3000:]
        assert "test_unrelated PASSED" not in result.output  # it failed at the start, not after tests ran
