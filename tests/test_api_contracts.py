"""The published API documents are the code's: docs/*.openapi.json are generated from the routes and their
models (scripts/openapi.py), and this fails while a checked-in document differs from what the code says.

Run ``make openapi`` (or ``python scripts/openapi.py``) after changing a route or a model, and commit the
documents with the change.
"""
from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT
from scripts import openapi


@pytest.mark.parametrize("name", sorted(openapi.DOCUMENTS))
def test_the_checked_in_document_is_what_the_code_generates(name):
    checked_in = (ROOT / "docs" / name).read_text()
    generated = openapi.render(openapi.document(name))
    assert checked_in == generated, f"docs/{name} is stale: run `make openapi` and commit it"


@pytest.mark.parametrize("name", sorted(openapi.DOCUMENTS))
def test_every_json_route_of_the_function_is_in_its_document(name):
    """A route added without include_in_schema=False is documented; the plain-text routes are the only ones left out."""
    function = openapi.DOCUMENTS[name][0]
    source = (ROOT / "functions" / function / "app.py").read_text()
    routes = re.findall(r'@app\.(get|post|delete|put)\("([^"]+)"([^)]*)', source)
    documented = {(method, path) for path, operations in json.loads((ROOT / "docs" / name).read_text())["paths"].items()
                  for method in operations}
    for method, path, rest in routes:
        wanted = (method, re.sub(r"<(\w+)>", r"{\1}", path))
        assert (wanted in documented) == ("include_in_schema=False" not in rest), wanted


def test_a_refusal_is_documented_as_400_never_powertools_default_422():
    for name in openapi.DOCUMENTS:
        spec = json.loads((ROOT / "docs" / name).read_text())
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                assert "422" not in operation["responses"], (name, method, path)
                if "requestBody" in operation:
                    assert {"400", "413", "415"} <= set(operation["responses"]), (name, method, path)
