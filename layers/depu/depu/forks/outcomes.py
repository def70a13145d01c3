"""What a journal entry did, in a form two runs can be compared by, and the conflicts a rebase finds.

The proxy records an entry's outcome when the user's write first runs; a fork host reports the outcome of the
same entry when it replays the journal (on a rebuild or a rebase). Both sides report raw facts (a receipt's
status, gas and logs, a call's result or error) and this module alone decides what counts as "the same".
"""
from __future__ import annotations

import hashlib
import html
import json
from typing import Any

TX_METHODS = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})
# results that legitimately differ between runs (ids, hashes), so only success/failure is compared
_RESULT_IGNORED = frozenset({"evm_snapshot", "evm_mine", "anvil_mine", "evm_increaseTime", "evm_setNextBlockTimestamp"})


def _as_int(value: Any) -> int:
    if isinstance(value, str):
        return int(value, 16) if value.startswith("0x") else int(value)
    return int(value or 0)


def logs_digest(logs: list[dict[str, Any]]) -> str:
    canonical = [
        [str(log.get("address", "")).lower(), [str(t).lower() for t in log.get("topics", [])], str(log.get("data", "")).lower()]
        for log in logs or []
    ]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def of_receipt(receipt: dict[str, Any] | None) -> dict[str, Any]:
    if not receipt:
        return {"kind": "tx", "pending": True}
    return {
        "kind": "tx",
        "status": _as_int(receipt.get("status")),
        "gas_used": _as_int(receipt.get("gasUsed")),
        "logs": logs_digest(receipt.get("logs", [])),
        "log_count": len(receipt.get("logs", []) or []),
        "hash": str(receipt.get("transactionHash") or ""),
    }


def of_result(result: Any) -> dict[str, Any]:
    return {"kind": "call", "result": result}


def of_error(error: Any) -> dict[str, Any]:
    message = error.get("message") if isinstance(error, dict) else str(error)
    return {"kind": "error", "message": str(message)[:200]}


def of_report(report: dict[str, Any]) -> dict[str, Any]:
    """A host's replay report for one entry: ``{"receipt": ...}``, ``{"result": ...}`` or ``{"error": ...}``."""
    if "error" in report:
        return of_error(report["error"])
    if "receipt" in report:
        return of_receipt(report["receipt"])
    return of_result(report.get("result"))


def differs(method: str, recorded: dict[str, Any] | None, replayed: dict[str, Any]) -> str | None:
    """Why the replay is not what the user saw first (a short phrase), or None if it behaves the same."""
    if recorded is None:
        return None
    if replayed.get("kind") == "error":
        return f"now fails: {replayed.get('message', '')}"
    if recorded.get("kind") != replayed.get("kind"):
        return "behaves differently"
    if replayed["kind"] == "tx":
        if recorded.get("status") != replayed.get("status"):
            return "now reverts" if replayed.get("status") == 0 else "now succeeds (it reverted before)"
        if recorded.get("logs") != replayed.get("logs"):
            return f"emits different events ({recorded.get('log_count')} -> {replayed.get('log_count')} logs)"
        if recorded.get("gas_used") != replayed.get("gas_used"):
            return f"uses different gas ({recorded.get('gas_used')} -> {replayed.get('gas_used')})"
        return None
    if method in _RESULT_IGNORED:
        return None
    if recorded.get("result") != replayed.get("result"):
        return "returns a different result"
    return None


def conflicts_text(conflicts: list[dict[str, Any]], limit: int = 5) -> str:
    """HTML for the user's notice: the first few conflicts, each as '#seq method: reason'."""
    parts = [f"#{c['seq']} {html.escape(c['method'])}: {html.escape(c['reason'])}" for c in conflicts[:limit]]
    if len(conflicts) > limit:
        parts.append(f"and {len(conflicts) - limit} more")
    return "; ".join(parts) or "none"
