"""Shared helpers for perfgate's own tests.

The fault tests run perfgate the way a user does: a child ``pytest`` on a small generated test file, with
its own profiles and scenarios directories, results directory and JUnit file. Every process a child
starts inherits a marker variable (``PERFGATE_TEST_MARK``), so after the child is gone a scan of
``/proc/*/environ`` proves that nothing it launched (vLLM's API server, engine core, workers) outlived it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARK_ENV = "PERFGATE_TEST_MARK"

# The child's pytest.ini: the same asyncio setup as the repo's pyproject.toml (one session loop).
CHILD_INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
addopts = -p no:cacheprovider
"""
# perfgate's fixtures come with its pytest11 plugin (perfgate/pytest_fixtures.py): the child needs no conftest.
CHILD_CONFTEST = "# perfgate's plugin (pytest11 entry point) provides the fixtures\n"

# A small closed-loop scenario for the tiny model: real streaming requests, a few seconds on two cores.
QUICK_SCENARIO = """description = "fault tests: 64 prompt tokens in, 16 out, closed loop concurrency 2, 6 requests"
endpoint = "/v1/completions"
num_requests = 6
request_timeout_s = 120
[prompt_tokens]
kind = "fixed"
value = 64
[output_tokens]
kind = "fixed"
value = 16
[load]
kind = "closed"
concurrency = 2
[warmup]
requests = 0
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def marked_processes(mark: str, cwd: Path | None = None) -> dict[int, str]:
    """Live processes whose environment carries ``PERFGATE_TEST_MARK=mark``, or whose working directory is
    ``cwd`` or below it: pid -> command line.

    Why both: vLLM renames its engine core and workers (setproctitle), which overwrites the environment
    that /proc shows; the working directory they inherited survives that, and re-parenting too.
    """
    needle = f"{MARK_ENV}={mark}".encode()
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                ours = needle in fh.read().split(b"\0")
            if not ours and cwd is not None:
                where = Path(os.readlink(f"/proc/{entry}/cwd"))
                ours = where == cwd or cwd in where.parents
            if not ours:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if _alive(int(entry)):
            found[int(entry)] = cmd
    return found


def kill_marked(mark: str, cwd: Path | None = None) -> dict[int, str]:
    """Safety net after a test: SIGKILL whatever still carries ``mark`` (returns what it found)."""
    left = marked_processes(mark, cwd)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def listening_sockets(port: int, tables: list[str] | None = None) -> list[str]:
    """Local addresses listening on TCP ``port``, e.g. ['127.0.0.1'], read from /proc/net/tcp and tcp6
    (or from ``tables``, their text as a child process saw it)."""
    if tables is None:
        tables = []
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                tables.append(Path(path).read_text())
            except OSError:
                continue
    found = []
    for table in tables:
        for line in table.splitlines()[1:]:
            cols = line.split()
            local, state = cols[1], cols[3]
            addr_hex, port_hex = local.rsplit(":", 1)
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            if len(addr_hex) == 8:  # IPv4, little-endian
                found.append(".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0)))
            else:
                found.append("ipv6:" + addr_hex)
    return found


@dataclass
class Case:
    name: str  # the test's name as JUnit writes it, e.g. "test_x[fault-a]"
    outcome: str  # passed | failed | error | skipped
    message: str  # failure/error/skip text (empty when passed)


@dataclass
class ChildResult:
    returncode: int
    output: str
    cases: dict[str, Case]
    results_dir: Path
    junit: Path
    leftovers: dict[int, str]  # marked processes alive right after the child exited (must be empty)

    def case(self, name: str) -> Case:
        if name not in self.cases:
            raise AssertionError(f"the child run has no test {name!r}; it ran {sorted(self.cases)}\n{self.output[-4000:]}")
        return self.cases[name]


@dataclass
class ChildPytest:
    """A pytest run in a subprocess: its own test file, profiles, scenarios, results dir and marker."""

    root: Path
    test_source: str
    profiles: dict[str, str] = field(default_factory=dict)  # name -> TOML, added to a copy of profiles/
    scenarios: dict[str, str] = field(default_factory=dict)  # name -> TOML, added to a copy of scenarios/
    env: dict[str, str] = field(default_factory=dict)
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.work = self.root / "child"
        self.results_dir = self.root / "results"
        self.junit = self.root / "junit.xml"
        self.log = self.root / "child-output.txt"
        self.fault_dir = self.root / "fault"  # files the child's tests and the parent exchange
        self.profiles_dir = self.root / "profiles"
        self.scenarios_dir = self.root / "scenarios"
        for d in (self.work, self.fault_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copytree(REPO / "profiles", self.profiles_dir, dirs_exist_ok=True)
        shutil.copytree(REPO / "scenarios", self.scenarios_dir, dirs_exist_ok=True)
        for name, text in self.profiles.items():
            (self.profiles_dir / f"{name}.toml").write_text(text)
        for name, text in self.scenarios.items():
            (self.scenarios_dir / f"{name}.toml").write_text(text)
        (self.work / "pytest.ini").write_text(CHILD_INI)
        (self.work / "conftest.py").write_text(CHILD_CONFTEST)
        (self.work / "test_child.py").write_text(self.test_source)

    def start(self, *args: str, results_dir: str | None = None) -> subprocess.Popen:
        dropped = ("PERFGATE_RUN_ID", "PERFGATE_RESULTS_DIR", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update({
            "PYTHONPATH": str(REPO), MARK_ENV: self.mark, "PERFGATE_PROFILES_DIR": str(self.profiles_dir),
            "PERFGATE_SCENARIOS_DIR": str(self.scenarios_dir), "FAULT_DIR": str(self.fault_dir),
            "PYTHONUNBUFFERED": "1", **self.env,
        })
        # A shell's background job inherits SIGINT ignored, and Python then keeps it ignored; the child must
        # take Ctrl-C as a user's pytest does, so it installs Python's default handler before pytest runs.
        boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "import pytest; sys.exit(pytest.console_main())")
        argv = [sys.executable, "-c", boot, "-v", "-rA", "-p", "no:randomly",
                f"--junitxml={self.junit}", f"--perfgate-results-dir={results_dir or self.results_dir}",
                "test_child.py", *args]
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=self.work, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self.proc

    def wait_for(self, what: str, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``ready`` while the child runs; fail (and stop the child) if it exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"the child pytest exited ({self.proc.returncode}) before {what}:\n"
                                     + self.output()[-6000:])
            if time.monotonic() > deadline:
                self.terminate()
                raise AssertionError(f"no {what} within {timeout_s:.0f} s:\n" + self.output()[-6000:])
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def terminate(self) -> None:
        """Last resort for a child that overran: kill it and everything it started."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        kill_marked(self.mark, self.work)

    def processes(self) -> dict[int, str]:
        """Everything this child run started that is still alive: pid -> command line."""
        return marked_processes(self.mark, self.work)

    def wait(self, timeout_s: float) -> ChildResult:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise AssertionError(f"the child pytest did not finish within {timeout_s:.0f} s:\n"
                                 + self.output()[-6000:]) from None
        finally:
            self._out.close()
        # Give processes that were already dying a moment to be reaped before calling them leftovers.
        end = time.monotonic() + 5
        while self.processes() and time.monotonic() < end:
            time.sleep(0.2)
        leftovers = kill_marked(self.mark, self.work)
        return ChildResult(code, self.output(), parse_junit(self.junit), self.results_dir, self.junit, leftovers)

    def run(self, *args: str, timeout_s: float = 300, results_dir: str | None = None) -> ChildResult:
        self.start(*args, results_dir=results_dir)
        return self.wait(timeout_s)


def parse_junit(path: Path) -> dict[str, Case]:
    if not path.exists():
        return {}
    cases: dict[str, Case] = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = tc.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or "") + "\n" + (node.text or "")
                break
        name = tc.get("name", "")
        # A test that failed and then errored in teardown appears twice; keep the failure.
        if name not in cases or cases[name].outcome == "passed":
            cases[name] = Case(name, outcome, message)
    return cases


def _child_factory(base: Path) -> Iterator[Callable[..., ChildPytest]]:
    made: list[ChildPytest] = []

    def make(test_source: str, **kw) -> ChildPytest:
        child = ChildPytest(base / f"run{len(made)}", test_source, **kw)
        made.append(child)
        return child

    yield make
    for child in made:
        child.terminate()


@pytest.fixture
def child_pytest(tmp_path: Path) -> Iterator[Callable[..., ChildPytest]]:
    """Factory for child pytest runs; every one is killed (with what it started) at teardown."""
    yield from _child_factory(tmp_path)


@pytest.fixture(scope="module")
def module_child_pytest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ChildPytest]]:
    """The same, for one expensive child run shared by a module's tests (one vLLM start, many checks)."""
    yield from _child_factory(tmp_path_factory.mktemp("child"))


def tiny_profile(**top: str | float) -> str:
    """A fault profile: the repo's cpu-tiny (copied into the child's profiles dir) plus eager mode
    (no compile: faster starts) and the given top-level fields."""
    lines = ['extends = "cpu-tiny"', 'description = "fault-matrix test profile"']
    lines += [f"{k.replace('_', '-')} = {v!r}".replace("'", '"') for k, v in top.items()]
    return "\n".join(lines) + "\n[vllm]\nenforce-eager = true\n"


@pytest.fixture(scope="session")
def fault_tools():
    """The helpers above for test modules (a conftest is not importable by name: two share "conftest")."""
    import types

    return types.SimpleNamespace(marked_processes=marked_processes, kill_marked=kill_marked,
                                 listening_sockets=listening_sockets, tiny_profile=tiny_profile,
                                 parse_junit=parse_junit, REPO=REPO, MARK_ENV=MARK_ENV,
                                 QUICK_SCENARIO=QUICK_SCENARIO)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A small byte-level BPE tokenizer with a BOS and a chat template (merges across joins happen)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(4)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([" ".join(words[i:i + 20]) for i in range(0, 3000, 20)],
                            trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    return tok


def pytester_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str,
                   ini_extra: str = "") -> pytest.Pytester:
    """A pytester project that uses this repository's profiles and fixtures, with ``source`` as its test file."""
    monkeypatch.setenv("PERFGATE_PROFILES_DIR", str(REPO / "profiles"))
    pytester.makeconftest(f"import sys; sys.path.insert(0, {str(REPO)!r})")  # fixtures: the plugin's
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = session\n" + ini_extra)
    pytester.makepyfile(test_suite=source)
    return pytester

