"""One line per headline figure, so ``python -m bench`` can put every benchmark's key numbers, each beside its
reference tool, into one table. A benchmark still prints its own detailed table; this only adds the summary."""
from __future__ import annotations

import json

MARK = "HEADLINE "


def headline(measure: str, depu: str, reference_tool: str, reference: str, comparison: str = "") -> None:
    """Print a headline row: what was measured, DePU's figure, the reference tool and its figure (same run,
    same machine, unless ``reference`` says it is a published figure), and how they compare."""
    print(MARK + json.dumps({"measure": measure, "depu": depu, "reference_tool": reference_tool,
                             "reference": reference, "comparison": comparison}), flush=True)
