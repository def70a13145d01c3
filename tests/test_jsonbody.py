"""Untrusted JSON never crashes the process, even after web3 raised the recursion limit."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from depu import jsonbody


def test_deep_nesting_is_refused_before_parsing():
    with pytest.raises(jsonbody.TooDeep):
        jsonbody.loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(jsonbody.TooDeep):
        jsonbody.loads('{"a":' * 5_000 + "1" + "}" * 5_000)


def test_brackets_inside_strings_do_not_count_and_shallow_documents_parse():
    text = '{"text": "' + "[{" * 10_000 + '", "escaped": "\\"[[[", "list": [[1], {"b": [2]}]}'
    assert jsonbody.loads(text)["list"] == [[1], {"b": [2]}]
    assert jsonbody.loads(b'{"update_id": 1}') == {"update_id": 1}


@given(st.recursive(st.none() | st.integers() | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=30))
def test_agrees_with_json_on_documents_within_the_limit(document):
    import json

    assert jsonbody.loads(json.dumps(document)) == document


def test_a_nested_bomb_does_not_kill_a_process_that_imported_web3():
    """py_ecc (through web3) sets the recursion limit to 100,000; plain json.loads then segfaults on this body.
    A Telegram update, an agent call or a fork RPC body like it must get a 4xx instead."""
    script = (
        "import sys, web3\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "from depu.telegram.updates import parse_body, MalformedUpdate\n"
        "try:\n"
        "    parse_body('[' * 200000 + ']' * 200000)\n"
        "except MalformedUpdate:\n"
        "    print('refused')\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": "layers/depu", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "refused", done.stderr[-2000:]
