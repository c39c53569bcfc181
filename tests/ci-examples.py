#!/usr/bin/python3
"""Runs the CI examples as their CI would: the GitHub Actions workflow's
steps (.github/workflows/migration-rehearsal.yml) and the GitLab CI job's
script and after_script (docker/ci/gitlab-ci.yml), read from the files, each
in a fresh copy of the source tree, against the Docker engine DOCKER_HOST
names (tests/docker-rehearsal.sh's own dockerd).  A job passes when its steps
do, the rehearsal says PASSED and its artifacts exist.

What cannot run here as written is replaced, and only that:
  - `docker compose` (Compose v2, which Debian 12 does not package): a
    `docker` on PATH that hands `docker compose ARGS` to docker-compose
    (Compose v1, which reads the same file) and everything else to
    /usr/bin/docker;
  - the registry's images (no registry is reachable): SOURCE_IMAGE and
    TARGET_IMAGE postgres:13/postgres:17 become pghandoff-postgres:13/17 (same
    entrypoint contract), and BASE_IMAGE (debian:bookworm-slim by default)
    pghandoff-base:bookworm, both built by tests/docker-rehearsal.sh;
  - GitHub's `uses:` steps: actions/checkout is the copy of the tree,
    actions/upload-artifact a check that its path holds files;
  - GitLab's `image:` and `services:` (docker:24 with docker:24-dind): the
    job's shell runs here, and DOCKER_HOST is the local dockerd's;
  - ${{ github.workspace }} and $CI_PROJECT_DIR: the copy of the tree;
  - the ports: the job gets the free ports the test chose (SOURCE_PORT,
    TARGET_PORT, PROXY_PORT, METRICS_PORT from the environment), since the
    compose file's defaults may be taken on a shared machine.
It also checks statically that each job rehearses with the README's command.

Usage: tests/ci-examples.py OUT_DIR [github|gitlab ...]
"""

import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DOCKER = "/usr/bin/docker"
COMPOSE_V1 = "/usr/bin/docker-compose"
README_COMMAND = "docker-compose -f docker/compose.yaml run --rm rehearsal"
REPLACED_ENV = {
    "SOURCE_IMAGE": ("postgres:13", "pghandoff-postgres:13"),
    "TARGET_IMAGE": ("postgres:17", "pghandoff-postgres:17"),
}
PASSED_THROUGH = ("DOCKER_HOST", "COMPOSE_PROJECT_NAME", "SOURCE_PORT", "TARGET_PORT", "PROXY_PORT",
                  "METRICS_PORT", "PATH", "HOME", "TMPDIR", "LANG")


def say(msg):
    print(msg, flush=True)


def fresh_tree(dest, out):
    """The checkout: the sources as .dockerignore leaves them to a build,
    without OUT_DIR should it lie in the tree."""
    patterns = shutil.ignore_patterns(".git", "build*", ".cache", "__pycache__", ".pytest_cache", "rehearsal-out")

    def ignore(directory, names):
        skip = set(patterns(directory, names))
        return skip | {n for n in names if os.path.join(os.path.abspath(directory), n) == out}

    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def docker_shim(directory):
    """A `docker` that runs `docker compose` with Compose v1."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "docker")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "# Compose v2's `docker compose`, run by Compose v1 (Debian 12 has no v2).\n"
                f'if [ "${{1:-}}" = compose ]; then shift; exec {COMPOSE_V1} "$@"; fi\n'
                f'exec {REAL_DOCKER} "$@"\n')
    os.chmod(path, 0o755)
    return directory


def base_env(shim):
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env["PATH"] = shim + ":" + env.get("PATH", "/usr/bin:/bin")
    env["CI"] = "true"
    # No registry: the base image is the one made from Debian's archive.
    env["BASE_IMAGE"] = "pghandoff-base:bookworm"
    return env


def job_env(declared, env, workspace_vars):
    """The job's own variables, with the replacements above."""
    for key, value in declared.items():
        value = str(value)
        for name, path in workspace_vars.items():
            value = value.replace(name, path)
        if key in REPLACED_ENV:
            official, local = REPLACED_ENV[key]
            if value != official:
                raise SystemExit(f"ci-examples: {key} is {value!r}, expected {official!r}")
            say(f"  replaced: {key}={official} -> {local} (no registry)")
            value = local
        if key == "DOCKER_HOST":
            say(f"  replaced: DOCKER_HOST={value} (the dind service) -> {os.environ['DOCKER_HOST']}")
            continue
        env[key] = value
    return env


def run_shell(shell, script, env, cwd, log):
    say(f"  $ {script.strip()}")
    with open(log, "a") as f:
        f.write(f"$ {script}\n")
        f.flush()
        proc = subprocess.run(shell + [script], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        say(f"    -> exit status {proc.returncode} (see {log})")
    return proc.returncode == 0


def check_artifacts(workspace, paths):
    ok = True
    for path in paths:
        full = os.path.join(workspace, path)
        files = [os.path.join(d, n) for d, _, names in os.walk(full) for n in names]
        say(f"  artifact {path}: {len(files)} files")
        ok = ok and bool(files)
    return ok


def check_rehearsal(workspace, log):
    """The rehearsal's own verdict and the logs the job collects."""
    out = os.path.join(workspace, "rehearsal-out")
    verdict_file = os.path.join(out, "verdict")
    verdict = open(verdict_file).read().strip() if os.path.exists(verdict_file) else "(no verdict)"
    say(f"  verdict: {verdict}")
    logs = os.path.join(out, "containers.log")
    text = open(log).read()
    checks = {
        "the rehearsal PASSED": verdict == "rehearsal: PASSED",
        "committed equals arrived": re.search(r"the workload committed (\d+) transactions; \1 arrived", text),
        "the containers' logs collected": os.path.exists(logs) and os.path.getsize(logs) > 0,
    }
    for what, ok in checks.items():
        say(f"  {'ok' if ok else 'NOT'}: {what}")
    return all(checks.values())


def same_as_readme(commands, where):
    """The job rehearses with the README's one command (compose v1 or v2)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    if README_COMMAND not in readme:
        raise SystemExit(f"ci-examples: README.md no longer shows `{README_COMMAND}`")
    wanted = {README_COMMAND, README_COMMAND.replace("docker-compose", "docker compose")}
    if not any(c.strip() in wanted for c in commands):
        raise SystemExit(f"ci-examples: {where} does not rehearse with the README's command `{README_COMMAND}`")
    say(f"  ok: {where} rehearses with the README's command")


def github(out, shim):
    path = os.path.join(ROOT, ".github/workflows/migration-rehearsal.yml")
    workflow = yaml.safe_load(open(path))
    (name, job), = workflow["jobs"].items()
    say(f"GitHub Actions: {os.path.relpath(path, ROOT)}, job {name}")
    workspace = os.path.join(out, "github", "workspace")
    log = os.path.join(out, "github", "job.log")
    same_as_readme([s["run"] for s in job["steps"] if "run" in s], "the GitHub workflow")
    fresh_tree(workspace, out)
    open(log, "w").close()
    env = job_env(job.get("env", {}), base_env(shim), {"${{ github.workspace }}": workspace})
    failed = False
    for step in job["steps"]:
        condition = step.get("if", "success()")
        if condition not in ("success()", "always()"):
            raise SystemExit(f"ci-examples: a step's condition this test does not know: {condition}")
        if failed and condition != "always()":
            say(f"  skipped after a failure: {step.get('name', step.get('uses'))}")
            continue
        if "uses" in step:
            action = step["uses"].split("@")[0]
            if action == "actions/checkout":
                say("  checkout: the copy of the tree in the workspace")
            elif action == "actions/upload-artifact":
                failed |= not check_artifacts(workspace, step["with"]["path"].split())
            else:
                raise SystemExit(f"ci-examples: an action this test does not know: {action}")
            continue
        # GitHub's default shell on Linux runners.
        ok = run_shell(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"], step["run"], env,
                       workspace, log)
        failed |= not ok
    return not failed and check_rehearsal(workspace, log)


def gitlab(out, shim):
    path = os.path.join(ROOT, "docker/ci/gitlab-ci.yml")
    config = yaml.safe_load(open(path))
    (name, job), = ((k, v) for k, v in config.items() if isinstance(v, dict) and "script" in v)
    say(f"GitLab CI: {os.path.relpath(path, ROOT)}, job {name} "
        f"(image {job.get('image')} and its services replaced by this shell and the local dockerd)")
    workspace = os.path.join(out, "gitlab", "workspace")
    log = os.path.join(out, "gitlab", "job.log")
    same_as_readme(job["script"], "the GitLab job")
    fresh_tree(workspace, out)
    open(log, "w").close()
    env = job_env(job.get("variables", {}), base_env(shim),
                  {"$CI_PROJECT_DIR": workspace, "${CI_PROJECT_DIR}": workspace})
    env["CI_PROJECT_DIR"] = workspace
    # The script's lines run in one shell and stop at the first failure; the
    # after_script's in another, whatever the script did.
    ok = run_shell(["sh", "-ec"], "\n".join(job["script"]), env, workspace, log)
    run_shell(["sh", "-c"], "\n".join(job.get("after_script", [])), env, workspace, log)
    artifacts = job.get("artifacts", {})
    if artifacts.get("when") != "always":
        say("  NOT: the artifacts are kept only when the job passes")
        ok = False
    ok = check_artifacts(workspace, artifacts.get("paths", [])) and ok
    return ok and check_rehearsal(workspace, log)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = os.path.abspath(sys.argv[1])
    which = sys.argv[2:] or ["github", "gitlab"]
    if "DOCKER_HOST" not in os.environ:
        raise SystemExit("ci-examples: DOCKER_HOST must name the Docker engine to run them against")
    shim = docker_shim(os.path.join(out, "bin"))
    failures = []
    for name in which:
        if not {"github": github, "gitlab": gitlab}[name](out, shim):
            failures.append(name)
    if failures:
        say(f"ci-examples: FAILED: {', '.join(failures)} (logs in {out})")
        return 1
    say("ci-examples: the CI examples pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
