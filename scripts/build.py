"""Build what ``sam deploy`` uploads, leave out what Lambda already provides, and check that it fits.

``make build`` runs this. It runs ``sam build`` (no container) on template.yaml, or, with ``--architecture``
naming the other architecture, on a copy of it that differs only in the architecture (the tests build x86_64
so that the built code can be imported on this machine). Then it:

- removes boto3, botocore and s3transfer from every built layer: the python Lambda runtime ships them, and a
  layer's botocore would shadow the runtime's under the runtime's boto3 (two releases that were never
  tested together);
- prints each function's unzipped size with its layers and fails when one reaches Lambda's 250 MB;
- writes ``depu-build.json`` into the build folder: for each function its folder and its layers' folders in
  the order Lambda searches them, so tests and ``bench/cold_import.py --built`` put on ``sys.path`` exactly
  what Lambda would.

Usage: ``python scripts/build.py [--architecture arm64|x86_64] [--build-dir DIR] [--no-cached]``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.template import TEMPLATE_PATH, load_template  # noqa: E402

# Lambda's limit on a function's unzipped code plus all its layers (what AWS calls 250 MB).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# What the python Lambda runtimes provide in /var/runtime and a layer need not carry. Only the AWS SDK is left
# out: its dependencies (jmespath, python-dateutil, urllib3, six) are also used by other packages and stay.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
MANIFEST = "depu-build.json"
ARCHITECTURES = ("arm64", "x86_64")


def runtime_and_architecture(template: dict[str, Any]) -> tuple[str, str]:
    """The one statement of the functions' runtime and architecture: template.yaml's Globals."""
    globals_ = template["Globals"]["Function"]
    (architecture,) = globals_["Architectures"]
    return globals_["Runtime"], architecture


def sam_executable() -> str:
    for candidate in (os.environ.get("SAM"), str(ROOT / ".venv-sam" / "bin" / "sam"), shutil.which("sam")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("sam not found: run `make build` (it installs the SAM CLI into .venv-sam) or set SAM=")


def template_for(architecture: str, work: Path) -> Path:
    """template.yaml itself for its own architecture, else a JSON copy with only the architecture changed
    (paths made absolute, since the copy lives elsewhere)."""
    template = load_template(TEMPLATE_PATH)
    if architecture == runtime_and_architecture(template)[1]:
        return TEMPLATE_PATH
    changed = copy.deepcopy(template)
    changed["Globals"]["Function"]["Architectures"] = [architecture]
    for resource in changed["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = str(TEMPLATE_PATH.parent / props[key])
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            props["CompatibleArchitectures"] = [architecture]
            resource["Metadata"]["BuildArchitecture"] = architecture
        if "Architectures" in props:
            props["Architectures"] = [architecture]
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"template-{architecture}.json"
    path.write_text(json.dumps(changed, indent=1))
    return path


def sam_build(template: Path, build_dir: Path, cached: bool) -> float:
    command = [sam_executable(), "build", "--template", str(template), "--build-dir", str(build_dir), "--parallel"]
    if cached:
        # one cache per build folder, so an arm64 build never serves an x86_64 one
        command += ["--cached", "--cache-dir", str(build_dir.with_name(build_dir.name + "-cache"))]
    else:
        command += ["--no-cached"]
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "SAM_CLI_TELEMETRY": "0"})
    return time.monotonic() - started


def prune_runtime_provided(folder: Path) -> int:
    """Delete the runtime's own packages (and their metadata) from one built layer; returns bytes removed."""
    removed = 0
    for entry in list(folder.iterdir()) if folder.is_dir() else []:
        name = entry.name.split("-", 1)[0] if entry.name.endswith((".dist-info", ".egg-info")) else entry.name
        if entry.is_dir() and name.lower() in RUNTIME_PROVIDED:
            removed += tree_bytes(entry)
            shutil.rmtree(entry)
    return removed


def tree_bytes(folder: Path) -> int:
    return sum(path.lstat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def _refs(layers: list[Any]) -> list[str]:
    return [layer["Ref"] for layer in layers]


def manifest_for(template: dict[str, Any], build_dir: Path, architecture: str) -> dict[str, Any]:
    runtime, _ = runtime_and_architecture(template)
    globals_ = template["Globals"]["Function"]
    layers = {lid: {"path": str(build_dir / lid / "python"), "bytes": tree_bytes(build_dir / lid)}
              for lid, res in template["Resources"].items() if res["Type"] == "AWS::Serverless::LayerVersion"}
    functions = {}
    for lid, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        own = _refs(globals_.get("Layers", [])) + _refs(props.get("Layers", []))
        code = build_dir / lid
        functions[lid] = {
            "code": str(code),
            "handler": props.get("Handler", globals_.get("Handler")),
            "layers": own,
            # Lambda unpacks layers into /opt in order, a later one overwriting an earlier one: search last first
            "path": [str(code)] + [layers[layer]["path"] for layer in reversed(own)],
            "bytes": tree_bytes(code) + sum(layers[layer]["bytes"] for layer in own),
        }
    return {"runtime": runtime, "architecture": architecture, "limit_bytes": LAMBDA_UNZIPPED_LIMIT,
            "runtime_provided": list(RUNTIME_PROVIDED), "layers": layers, "functions": functions}


# What /var/runtime holds in the python Lambda runtimes besides the runtime interface client: the AWS SDK and
# the packages it needs. Standing in for it, tests and the cold-start benchmark link the dev venv's copies.
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


def lambda_runtime_dir(target: Path) -> Path:
    """A folder standing in for Lambda's /var/runtime: links to this interpreter's boto3 and its dependencies.
    Put it on ``sys.path`` after the function and its layers, where Lambda has it."""
    import importlib.util

    target.mkdir(parents=True, exist_ok=True)
    for name in LAMBDA_RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"{name} is not installed in {sys.executable}; it stands in for Lambda's copy")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        link = target / source.name
        if not link.exists():
            link.symlink_to(source)
    return target


def load_manifest(build_dir: Path) -> dict[str, Any]:
    return json.loads((build_dir / MANIFEST).read_text())


def size_table(manifest: dict[str, Any]) -> str:
    mib = 1024 * 1024
    lines = [f"unzipped size per function, with its layers ({manifest['architecture']}; Lambda's limit "
             f"{manifest['limit_bytes'] / mib:.0f} MB):",
             "| function | layers | MB | of limit |", "|---|---|---:|---:|"]
    for lid, spec in sorted(manifest["functions"].items(), key=lambda item: -item[1]["bytes"]):
        lines.append(f"| {lid} | {' + '.join(spec['layers'])} | {spec['bytes'] / mib:.1f} | "
                     f"{spec['bytes'] / manifest['limit_bytes']:.0%} |")
    lines.append("layers: " + ", ".join(f"{lid} {spec['bytes'] / mib:.1f} MB" for lid, spec in manifest["layers"].items()))
    return "\n".join(lines)


def build(architecture: str | None = None, build_dir: Path | None = None, cached: bool = True) -> dict[str, Any]:
    template = load_template(TEMPLATE_PATH)
    architecture = architecture or runtime_and_architecture(template)[1]
    if architecture not in ARCHITECTURES:
        raise SystemExit(f"architecture must be one of {', '.join(ARCHITECTURES)}")
    build_dir = (build_dir or ROOT / ".aws-sam" / "build").resolve()
    seconds = sam_build(template_for(architecture, build_dir.parent), build_dir, cached)
    removed = sum(prune_runtime_provided(build_dir / lid / "python")
                  for lid, res in template["Resources"].items() if res["Type"] == "AWS::Serverless::LayerVersion")
    manifest = manifest_for(template, build_dir, architecture)
    manifest["build_seconds"] = round(seconds, 1)
    manifest["runtime_provided_bytes_removed"] = removed
    (build_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=ARCHITECTURES, help="default: template.yaml's Globals")
    parser.add_argument("--build-dir", type=Path, help="default: .aws-sam/build (what `sam deploy` uploads)")
    parser.add_argument("--no-cached", action="store_true", help="build every function and layer from scratch")
    args = parser.parse_args(argv)
    manifest = build(args.architecture, args.build_dir, cached=not args.no_cached)
    print(size_table(manifest))
    print(f"left out what the runtime provides ({', '.join(RUNTIME_PROVIDED)}): "
          f"{manifest['runtime_provided_bytes_removed'] / 1024 / 1024:.1f} MB; sam build took {manifest['build_seconds']:.0f} s")
    over = [lid for lid, spec in manifest["functions"].items() if spec["bytes"] >= manifest["limit_bytes"]]
    if over:
        print(f"OVER Lambda's unzipped limit: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
