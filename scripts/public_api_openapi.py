"""Write the public API's OpenAPI document (generated from the routes' models) to docs/public-api.openapi.json.

Run after changing a route or a model; tests/test_public_api_contract.py fails while the checked-in copy
differs from what the code generates."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "public-api.openapi.json"


def generate() -> str:
    sys.path.insert(0, str(ROOT / "layers" / "depu"))
    spec = importlib.util.spec_from_file_location("public_api_app_for_openapi", ROOT / "functions" / "public_api" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.dumps(module.openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(generate())
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
