"""Why a fork's transaction reverted, in words: the decoded revert reason and a compact call tree.

Both are read from anvil's ``callTracer`` frame (``debug_traceTransaction``), the same shape geth gives:
``{type, from, to, input, output, value, gasUsed, error, revertReason, calls: [...]}``. A revert's ``output`` is
ABI data: ``Error(string)`` (what ``require(cond, "msg")`` and ``revert("msg")`` produce), ``Panic(uint256)``
(assert, overflow, division by zero...), or a custom error, named here when its selector is one DePU knows
(``KNOWN_ERRORS``, or the caller's own signatures) and shown by selector otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

ERROR_SELECTOR = "08c379a0"  # Error(string)
PANIC_SELECTOR = "4e487b71"  # Panic(uint256)
PANIC_CODES = {
    0x00: "generic compiler panic",
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "corrupt storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory (too large an allocation)",
    0x51: "call to an uninitialised function pointer",
}
# custom errors common enough to name without the contract's ABI (OpenZeppelin 5's ERC-20/ERC-721/Ownable)
KNOWN_ERRORS = (
    "ERC20InsufficientBalance(address,uint256,uint256)",
    "ERC20InsufficientAllowance(address,uint256,uint256)",
    "ERC20InvalidSender(address)",
    "ERC20InvalidReceiver(address)",
    "ERC20InvalidApprover(address)",
    "ERC20InvalidSpender(address)",
    "ERC721NonexistentToken(uint256)",
    "ERC721IncorrectOwner(address,uint256,address)",
    "ERC721InsufficientApproval(address,uint256)",
    "OwnableUnauthorizedAccount(address)",
    "OwnableInvalidOwner(address)",
    "ReentrancyGuardReentrantCall()",
    "EnforcedPause()",
    "SafeERC20FailedOperation(address)",
    "AddressEmptyCode(address)",
    "FailedInnerCall()",
)
MAX_TREE_LINES = 40
MAX_DEPTH = 12


@dataclass
class Revert:
    """A decoded revert: ``kind`` is 'error', 'panic', 'custom', 'empty' or 'raw'; ``text`` says it in words."""

    kind: str
    text: str
    selector: str = ""
    args: list[Any] = field(default_factory=list)


def selector_of(signature: str) -> str:
    from eth_utils import keccak

    return keccak(text=signature)[:4].hex()


@lru_cache(maxsize=1)
def _known() -> dict[str, str]:
    return {selector_of(signature): signature for signature in KNOWN_ERRORS}


def _hex(data: Any) -> bytes:
    text = str(data or "")
    text = text[2:] if text.lower().startswith("0x") else text
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def decode_revert(data: Any, signatures: Iterable[str] = ()) -> Revert:
    """What a revert's return data says. ``signatures``: custom errors the caller knows (``Name(type,...)``)."""
    raw = _hex(data)
    if not raw:
        return Revert("empty", "reverted without a reason (no return data)")
    selector, body = raw[:4].hex(), raw[4:]
    if selector == ERROR_SELECTOR:
        try:
            from eth_abi import decode

            (message,) = decode(["string"], body)
            return Revert("error", f'Error("{message}")', selector, [message])
        except Exception:  # noqa: BLE001 - malformed ABI data is shown raw below
            pass
    if selector == PANIC_SELECTOR and len(body) >= 32:
        code = int.from_bytes(body[:32], "big")
        meaning = PANIC_CODES.get(code, "unknown panic code")
        return Revert("panic", f"Panic(0x{code:02x}): {meaning}", selector, [code])
    known = {**_known(), **{selector_of(s): s for s in signatures}}
    signature = known.get(selector)
    if signature:
        types = _types(signature)
        try:
            from eth_abi import decode

            args = list(decode(types, body)) if types else []
            shown = ", ".join(_show(value) for value in args)
            return Revert("custom", f"{signature.split('(')[0]}({shown})", selector, args)
        except Exception:  # noqa: BLE001
            return Revert("custom", f"{signature} (arguments not decodable)", selector)
    if len(raw) >= 4:
        return Revert("custom", f"custom error 0x{selector} (unknown to DePU; {len(body)} bytes of arguments)", selector)
    return Revert("raw", f"reverted with data 0x{raw.hex()}")


def _types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1: signature.rindex(")")]
    return [part for part in inner.split(",") if part]


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def failing_frame(frame: dict[str, Any]) -> dict[str, Any] | None:
    """The deepest frame that failed along the failing path: where the revert came from."""
    if not isinstance(frame, dict) or not frame.get("error"):
        return None
    for child in frame.get("calls") or []:
        deeper = failing_frame(child)
        if deeper is not None and _hex(deeper.get("output")) == _hex(frame.get("output")):
            return deeper
    return frame


def reason(frame: dict[str, Any], signatures: Iterable[str] = ()) -> Revert | None:
    """Why the traced call failed, or None if it did not."""
    if not isinstance(frame, dict) or not frame.get("error"):
        return None
    origin = failing_frame(frame) or frame
    output = origin.get("output") or frame.get("output")
    if _hex(output):
        return decode_revert(output, signatures)
    error = str(origin.get("error") or frame.get("error"))
    if error.lower() in ("execution reverted", "reverted"):
        return decode_revert(output, signatures)
    return Revert("raw", error)  # out of gas, invalid opcode...


def call_tree(frame: dict[str, Any], signatures: Iterable[str] = (), limit: int = MAX_TREE_LINES) -> list[str]:
    """One line per call frame, indented by depth: type, target, function selector, value, gas, and ✗ with
    the reason for a failed frame. At most ``limit`` lines (then 'and N more calls')."""
    lines: list[str] = []
    skipped = [0]
    signatures = tuple(signatures)

    def walk(node: dict[str, Any], depth: int) -> None:
        if len(lines) >= limit or depth > MAX_DEPTH:
            skipped[0] += 1 + _count(node.get("calls") or [])
            return
        lines.append("  " * depth + _line(node, signatures))
        for child in node.get("calls") or []:
            if isinstance(child, dict):
                walk(child, depth + 1)

    if isinstance(frame, dict):
        walk(frame, 0)
    if skipped[0]:
        lines.append(f"… and {skipped[0]} more calls")
    return lines


def _count(calls: list[Any]) -> int:
    return sum(1 + _count(call.get("calls") or []) for call in calls if isinstance(call, dict))


def _line(node: dict[str, Any], signatures: tuple[str, ...]) -> str:
    kind = str(node.get("type") or "CALL").upper()
    target = _short(node.get("to"))
    data = _hex(node.get("input"))
    what = f" {data[:4].hex()}" if len(data) >= 4 and kind not in ("CREATE", "CREATE2") else ""
    value = int(str(node.get("value") or "0x0"), 16) if str(node.get("value") or "0x0").startswith("0x") else 0
    shown_value = f" value {value / 10**18:g} ETH" if value else ""
    gas = node.get("gasUsed")
    gas_text = f" gas {int(gas, 16)}" if isinstance(gas, str) and gas.startswith("0x") else ""
    line = f"{kind} {_short(node.get('from'))}→{target}{what}{shown_value}{gas_text}"
    if node.get("error"):
        found = reason(node, signatures)
        line += f" ✗ {found.text if found else node.get('error')}"
    return line


def _short(address: Any) -> str:
    text = str(address or "")
    return f"{text[:6]}…{text[-4:]}" if len(text) == 42 else (text or "?")
