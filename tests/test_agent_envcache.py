"""A job spec's packages: requirements.txt installed by the agent (before the job's code, which has no network)
into an environment cached by its hash, from a wheel this test builds and serves with --find-links; the job
runs in the real bubblewrap sandbox as its own uid and sees the package and torch. Attacks on the setup (a URL,
a pip option, a package whose build script would run code, a wheel that writes outside its environment) fail.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from agent_process import private_uid_base

from depu_agent import envcache, isolation
from depu_agent.config import load_config
from depu_agent.runner import StopRequest

PROBE_VERSION = "1.2.0"


def _package(root: Path, name: str, body: str, *, setup_py: str | None = None) -> Path:
    source = root / f"src-{name}"
    module = name.replace("-", "_")
    (source / module).mkdir(parents=True)
    (source / module / "__init__.py").write_text(body, encoding="utf-8")
    (source / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{PROBE_VERSION}"
    """), encoding="utf-8")
    if setup_py:
        (source / "setup.py").write_text(setup_py, encoding="utf-8")
    return source


@pytest.fixture(scope="module")
def wheels():
    """A folder of packages this test made: a wheel of depu-probe, and only the sdist of depu-evil (whose
    setup.py would write a marker file if anything ran it)."""
    root = Path(tempfile.mkdtemp(prefix="depu-wheels-"))
    marker = root / "evil-ran"
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(_package(root, "depu-probe", "VALUE = 42\n"))], check=True)
    evil = _package(root, "depu-evil", "", setup_py=f"open({str(marker)!r}, 'w').write('ran')\n"
                                                   "from setuptools import setup\nsetup()\n")
    with zipfile.ZipFile(dist / f"depu_evil-{PROBE_VERSION}.zip", "w") as sdist:  # an sdist only, no wheel
        for path in evil.rglob("*"):
            sdist.write(path, f"depu_evil-{PROBE_VERSION}/{path.relative_to(evil)}")
    marker.unlink(missing_ok=True)
    _escaping_wheel(dist, root / "escaped")
    yield {"dist": str(dist), "marker": marker, "escaped": root / "escaped"}
    shutil.rmtree(root, ignore_errors=True)


def _escaping_wheel(dist: Path, target: Path) -> None:
    """A hand-made wheel whose RECORD and archive hold a path that climbs out of site-packages."""
    name, version = "depu_escape", PROBE_VERSION
    info = f"{name}-{version}.dist-info"
    climb = "../" * 12 + str(target).lstrip("/")
    files = {f"{name}/__init__.py": "", climb: "escaped\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: depu-escape\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(dist / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.fixture
def config(tmp_path, wheels):
    cache = Path(tempfile.mkdtemp(prefix="depu-envs-"))  # the sandbox uid must reach it (tmp_path is 700)
    os.chmod(cache, 0o755)
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never", script_memory_mb=2048,
                         sandbox_uid_base=private_uid_base(3), env_cache_dir=str(cache / "envs"),
                         package_find_links=wheels["dist"])
    config.write_token("agent-token-" + "x" * 30)
    yield config
    shutil.rmtree(cache, ignore_errors=True)


def run(config, program: isolation.JobProgram, script: bytes = b"", time_limit_s: float = 120):
    plan = isolation.plan_script(job_id="jspec", script=script, gpu_index=program.gpu_indices[0], on_cpu=True,
                                 time_limit_s=time_limit_s, config=config, use_docker=False, job=program)
    lines: list[str] = []
    outcome = plan.start(on_line=lines.append).wait(time_limit_s, StopRequest(), grace_s=1)
    return outcome, lines, plan


def runtime(config):
    return isolation.runtime_for(isolation.job_user(config, 0), config)


def test_requirements_install_once_from_a_local_wheel_and_the_sandboxed_job_imports_them(config):
    lines = envcache.requirement_lines(["depu_probe==1.2.0", "# a comment", ""])
    assert lines == ["depu-probe==1.2.0"]
    seen: list[str] = []
    first = envcache.ensure(config, runtime(config), lines, seen.append)
    assert not first.hit and any("depu-probe" in line or "depu_probe" in line for line in seen), seen
    assert envcache.ready_hashes(config) == [first.hash]

    program = isolation.JobProgram(
        command="python -c 'import json, os, sys, torch, depu_probe; "
                "print(json.dumps({\"value\": depu_probe.VALUE, \"torch\": torch.__version__, \"uid\": os.getuid(), "
                "\"exe\": sys.executable, \"slots\": os.environ[\"DEPU_JOB_SLOTS\"], "
                "\"cuda\": os.environ[\"CUDA_VISIBLE_DEVICES\"], \"mode\": os.environ[\"MODE\"]}))' "
                "&& echo done > outputs/a.txt && echo more > outputs/b.txt",
        gpu_indices=[0, 1], visible_devices="", variables={"MODE": "fast"}, python=first.python, env_root=first.path)
    outcome, out, plan = run(config, program)
    try:
        assert outcome.returncode == 0, (out, outcome.stderr_tail)
        facts = json.loads(out[0])
        assert facts["value"] == 42 and facts["torch"]  # the job's package, over the runtime's torch
        assert facts["uid"] == plan.user.uid != os.getuid()
        assert facts["exe"] == first.python and facts["slots"] == "0,1" and facts["cuda"] == "" and facts["mode"] == "fast"
        kept = Path(tempfile.mkdtemp(dir=os.path.dirname(config.agent_token_file)))
        assert [name for name, _ in isolation.collect_outputs(plan, kept, 1_000_000)] == ["a.txt", "b.txt"]
    finally:
        isolation.remove_workspace(plan)

    started = time.monotonic()
    second = envcache.ensure(config, runtime(config), lines, seen.append)
    assert second.hit and second.path == first.path and time.monotonic() - started < 1.0


def test_a_requirement_that_names_a_url_or_a_pip_option_is_refused_before_any_request(config):
    hits: list[str] = []

    class Counter(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for line in (f"depu-probe @ {url}/depu_probe-1.2.0-py3-none-any.whl", f"--index-url {url}/simple",
                     f"--extra-index-url {url}", f"-f {url}", f"git+{url}/repo.git", "-e .", "./local/path",
                     f"-r {url}/more.txt"):
            with pytest.raises(envcache.SetupFailed):
                envcache.ensure(config, runtime(config), envcache.requirement_lines([line]), print)
    finally:
        server.shutdown()
    assert hits == []
    assert envcache.ready_hashes(config) == []


def test_setup_runs_no_package_code_and_writes_nothing_outside_the_environment(config, wheels):
    with pytest.raises(envcache.SetupFailed, match="installing the requirements failed"):
        envcache.ensure(config, runtime(config), envcache.requirement_lines(["depu-evil"]), print)
    assert not wheels["marker"].exists()  # the sdist's setup.py never ran (wheels only)
    with pytest.raises(envcache.SetupFailed, match="installing the requirements failed"):
        envcache.ensure(config, runtime(config), envcache.requirement_lines(["depu-escape"]), print)
    assert not wheels["escaped"].exists()
    # a package that is not in the provider's source is not fetched from anywhere else
    with pytest.raises(envcache.SetupFailed, match="installing the requirements failed"):
        envcache.ensure(config, runtime(config), envcache.requirement_lines(["requests-not-served-here"]), print)
    assert envcache.ready_hashes(config) == []  # failed builds leave nothing that looks ready


def test_without_a_package_source_setup_fails_saying_so(config):
    config.package_find_links = ""
    with pytest.raises(envcache.SetupFailed, match="no package source"):
        envcache.ensure(config, runtime(config), ["depu-probe"], print)


def test_outputs_a_symlink_to_a_host_file_and_one_over_the_cap_are_left_out_saying_why(config):
    token = config.agent_token_file
    program = isolation.JobProgram(
        command=f"ln -s {token} outputs/stolen && head -c 5000 /dev/zero > outputs/big.bin && echo ok > outputs/ok.txt",
        gpu_indices=[0], visible_devices="", variables={})
    outcome, out, plan = run(config, program)
    try:
        assert outcome.returncode == 0, (out, outcome.stderr_tail)
        kept = Path(tempfile.mkdtemp(dir=os.path.dirname(token)))
        left_out: list[str] = []
        assert [name for name, _ in isolation.collect_outputs(plan, kept, 1000, 64, left_out)] == ["ok.txt"]
        assert any(item.startswith("stolen:") for item in left_out)
        assert any(item.startswith("big.bin:") and "cap" in item for item in left_out)
    finally:
        isolation.remove_workspace(plan)


def test_the_agent_and_the_cloud_read_requirements_alike():
    from depu.errors import UserError
    from depu.jobs import spec

    text = "Torch>=2.0\nnumpy [extra1, extra2] <3 , >=1.2\nDepu_Probe==1.2.0  # pinned\n\nnumpy[extra1,extra2]<3,>=1.2\n"
    assert envcache.requirement_lines(text) == spec.requirement_lines(text)
    assert envcache.env_hash(envcache.requirement_lines(text)) == spec.env_hash(spec.requirement_lines(text))
    for bad in ("x @ https://example.org/x.whl", "--index-url http://127.0.0.1/", "-e .", "git+https://h/r"):
        with pytest.raises(UserError):
            spec.requirement_lines(bad)
        with pytest.raises(envcache.SetupFailed):
            envcache.requirement_lines(bad)
