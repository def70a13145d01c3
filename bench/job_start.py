"""Job start: from submit to the first line of the job's own output delivered to the cloud (where the chat, the
Mini App and the API read it), for a job spec whose environment the agent holds (a cache hit), one whose
requirements are new (a cache miss: the agent builds the environment first), and one in a renter's own image
held by the agent's podman (an image hit; a pull cannot be measured here: no registry is reachable).

Everything is on this machine: the local cloud (``local.runtime.LocalRuntime`` over moto), the real agent
process (bubblewrap sandbox; podman when it runs here), and the package, a wheel this script builds and serves
over HTTP on 127.0.0.1 as the provider's ``package_find_links``. Each miss names the same wheel with a new
version specifier, so its requirements hash is new and the environment is really built.

Reference, same run: the same command run directly, without DePU and without a cache: ``python -m venv``,
``pip install`` of the same requirements from the same local server, then the script; timed to its first line.
The agent ships logs every ``log_interval_seconds`` (its default, 1 s), which the DePU rows include.
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402
from rental_dispatch import start_cloud  # noqa: E402  (also puts the layers, agent and tests on sys.path)
from rental_envs import _wheel  # noqa: E402

import functools  # noqa: E402
import http.server  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

RUNS = 10
DEADLINE_S = 180
MARKER = "depu-bench: code started"
COMMAND = f"python -c 'import depu_bench_probe; print(\"{MARKER}\")'"
IMAGE_COMMAND = f"echo '{MARKER}'"
USER, PROVIDER = 9400, 9401


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The wheel folder over HTTP on 127.0.0.1 (pip's --find-links reads its index page)."""
    handler = functools.partial(QuietFiles, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda request, address: None  # pip closing a kept-alive connection is not news
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def local_image() -> str | None:
    """A digest-pinned image of the host's /bin/sh and its libraries, imported into podman; None without it."""
    if not shutil.which("podman"):
        return None
    from depu_agent import containers

    name = "localhost/depu-bench-job:1"
    with tempfile.TemporaryDirectory() as folder:
        tarball = Path(folder) / "rootfs.tar"
        with tarfile.open(tarball, "w") as archive:
            for path in sorted({"/bin/sh", "/bin/echo", *containers._libraries_of("/bin/sh"),
                                *containers._libraries_of("/bin/echo")}):
                archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
        if subprocess.run(["podman", "import", str(tarball), name], capture_output=True, timeout=120).returncode:
            return None
    digest = subprocess.run(["podman", "images", "--digests", "--format", "{{.Digest}}", name],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    return f"localhost/depu-bench-job@{digest}" if digest else None


def first_line_seconds(params: dict) -> tuple[float, dict]:
    """Submit one job spec; seconds until its first output line is stored, and its result once it ends."""
    from depu.jobs.models import Job
    from rental_helpers import submit_job

    started = time.perf_counter()
    job = submit_job(USER, gpu_class="cpu", workload="job", params=params, time_limit_s=300)
    deadline = started + DEADLINE_S
    seen = None
    while time.perf_counter() < deadline:
        current = Job.get(job.job_id, consistent_read=True)
        if seen is None and MARKER in (current.logs_tail or []):
            seen = time.perf_counter() - started
        if current.status in ("succeeded", "failed", "cancelled") and current.settled:
            if seen is None or current.status != "succeeded":
                raise RuntimeError(f"job {job.job_id} {current.status}: {current.error}")
            return seen, current.result or {}
        time.sleep(0.01)
    raise RuntimeError(f"job {job.job_id} did not finish in {DEADLINE_S} s")


def reference_seconds(root: Path, index_url: str, requirement: str) -> float:
    """No DePU, no cache: a fresh venv, pip install, then the script; seconds to its first line."""
    venv = root / f"reference-{time.monotonic_ns()}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--isolated", "--no-index", "--only-binary", ":all:", "--find-links", index_url, requirement],
                   check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    child = subprocess.Popen([str(venv / "bin" / "python"), "-u", "-c",
                              f"import depu_bench_probe; print({MARKER!r})"], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().strip()
    elapsed = time.perf_counter() - started
    child.wait(30)
    shutil.rmtree(venv, ignore_errors=True)
    if line != MARKER:
        raise RuntimeError(f"the reference printed {line!r}")
    return elapsed


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    from agent_process import AgentProcess
    from rental_helpers import enrol_provider, ensure_user

    root = Path(tempfile.mkdtemp(prefix="depu-bench-start-"))
    os.chmod(root, 0o755)  # the sandbox uids read the environments under it
    moto, runtime = start_cloud()
    server, index_url = serve(_wheel(root))
    image = local_image()
    agent = None
    rows: dict[str, list[float]] = {"hit": [], "miss": [], "image": [], "reference": []}
    try:
        ensure_user(USER, credits=100_000)
        settings = {"cpu_slots": 1, "package_find_links": index_url, "env_cache_dir": str(root / "envs"),
                    "log_interval_seconds": 1.0, **({"container_registries": ["localhost"]} if image else {})}
        agent = AgentProcess(runtime.url, root / "agent", "bench-start", enrolment_token=enrol_provider(PROVIDER),
                             settings=settings)
        agent.wait_registered(120)
        warm = {"command": COMMAND, "requirements": "depu-bench-probe==1.0.0\n"}
        first_line_seconds(warm)  # builds the environment once: every later run of it is a hit
        for run in range(RUNS):
            seconds, result = first_line_seconds(warm)
            assert result.get("env_cached") is True, result
            rows["hit"].append(seconds)
            seconds, result = first_line_seconds({"command": COMMAND,
                                                  "requirements": f"depu-bench-probe>=1.0.0,!=0.0.{run}\n"})
            assert result.get("env_cached") is False, result
            rows["miss"].append(seconds)
            if image:
                seconds, result = first_line_seconds({"command": IMAGE_COMMAND, "image": image})
                assert result.get("sandbox") == "container" and result.get("image_cached") is True, result
                rows["image"].append(seconds)
            rows["reference"].append(reference_seconds(root, index_url, "depu-bench-probe==1.0.0"))
    finally:
        if agent is not None:
            agent.stop()
        server.shutdown()
        runtime.stop()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)
    labels = {"hit": "DePU, environment cached on the agent (hit)",
              "miss": "DePU, new requirements (miss: env built first)",
              "image": "DePU, own image held by podman (image hit)",
              "reference": "reference: fresh venv + pip install + run"}
    print(f"Submit -> first output line delivered ({RUNS} runs each, interleaved; one local wheel over "
          "127.0.0.1; real agent process, CPU slot)")
    print()
    print("| case | p50 s | p95 s | min s | max s |")
    print("|---|---|---|---|---|")
    for key, label in labels.items():
        values = rows[key]
        if not values:
            print(f"| {label} | podman cannot run here | | | |")
            continue
        p50, p95 = percentiles(values)
        print(f"| {label} | {p50:.2f} | {p95:.2f} | {min(values):.2f} | {max(values):.2f} |")
    hit50, hit95 = percentiles(rows["hit"])
    miss50, miss95 = percentiles(rows["miss"])
    ref50, _ = percentiles(rows["reference"])
    headline("job spec start, submit -> first log line, env cache hit (p50 / p95)", f"{hit50:.2f} s / {hit95:.2f} s",
             "fresh venv + pip install + run, no cloud", f"{ref50:.2f} s",
             f"miss {miss50:.2f} s / {miss95:.2f} s")


if __name__ == "__main__":
    main()
