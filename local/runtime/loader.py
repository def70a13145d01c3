"""Import a function's handler file as a module of its own.

Every handler file is called ``app.py``, so each load gets a unique module name, and the function's folder is
on ``sys.path`` only while it is imported: sibling modules it imports are renamed away afterwards, so two
functions may both have, say, a ``models.py``. The local runtime's workers and the tests load handlers here.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from local.template import ROOT, Function

LAYER_PATHS = (ROOT / "layers" / "depu",)  # what Lambda's layer gives every function: ``import depu``

Handler = Callable[[dict[str, Any], Any], Any]


class HandlerMissing(Exception):
    """The function's code is not written yet (functions/<name>/app.py absent)."""


_import_lock = threading.Lock()


def source_file(spec: Function) -> Path:
    module_name = spec.handler.rsplit(".", 1)[0]
    return spec.code_dir / (module_name.replace(".", "/") + ".py")


def add_layers() -> None:
    for layer in LAYER_PATHS:
        if str(layer) not in sys.path:
            sys.path.append(str(layer))


def load_module(spec: Function, unique: str) -> ModuleType:
    """Import the handler's module of ``spec`` as ``unique`` (raises HandlerMissing if it is not written)."""
    source = source_file(spec)
    if not source.exists():
        raise HandlerMissing(f"{spec.logical_id}: {relative(source)} not written yet")
    code_dir = str(spec.code_dir)
    with _import_lock:
        before = set(sys.modules)
        sys.modules.pop(unique, None)
        sys.path.insert(0, code_dir)
        try:
            module_spec = importlib.util.spec_from_file_location(unique, source)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot import {source}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[unique] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(unique, None)
                raise
        finally:
            sys.path.remove(code_dir)
            for name in set(sys.modules) - before:
                loaded = getattr(sys.modules.get(name), "__file__", None) or ""
                if name != unique and loaded.startswith(code_dir + os.sep):
                    sys.modules[f"{unique}__{name}"] = sys.modules.pop(name)
    return module


def load_handler(spec: Function, unique: str) -> Handler:
    """The handler function of ``spec`` (``Handler: app.lambda_handler`` -> ``lambda_handler``)."""
    return getattr(load_module(spec, unique), spec.handler.rsplit(".", 1)[1])


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
