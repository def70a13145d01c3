#!/usr/bin/env bash
# Recompile DePU's test contracts into contracts/build/<Name>.json ({"abi": [...], "bytecode": "0x..."}).
# The artifacts are committed so tests and the local stack need no compiler; run this only after editing
# contracts/src/*.sol. It uses solcjs (the npm "solc" package, pure JavaScript, no download at compile time),
# installed into a scratch folder outside the repository.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${SOLC_VERSION:-0.8.28}"
scratch="${SOLCJS_DIR:-/tmp/depu-solcjs}"
if [ ! -x "$scratch/node_modules/.bin/solcjs" ]; then
  mkdir -p "$scratch"
  npm install --prefix "$scratch" --no-audit --no-fund "solc@$version" >/dev/null
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cd "$here/src"
"$scratch/node_modules/.bin/solcjs" --optimize --abi --bin -o "$out" ./*.sol
mkdir -p "$here/build"
python3 - "$out" "$here/build" "$version" <<'PY'
import json, pathlib, sys
out, build, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
for abi_file in sorted(out.glob("*.abi")):
    name = abi_file.stem.rsplit("_", 1)[-1]
    bytecode = abi_file.with_suffix(".bin").read_text().strip()
    if not bytecode:
        continue  # an interface: nothing to deploy
    artifact = {"contractName": name, "compiler": f"solcjs {version}", "abi": json.loads(abi_file.read_text()),
                "bytecode": "0x" + bytecode}
    (build / f"{name}.json").write_text(json.dumps(artifact, indent=1) + "\n")
    print("built", name, len(bytecode) // 2, "bytes")
PY
