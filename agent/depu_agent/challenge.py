"""Answering the cloud's hardware challenge: the proof that this machine's devices are what it claims.

The cloud sends a fresh seed and sizes for the claimed class; this module computes, on every claimed device,
the chain G_t = ((G_{t-1} · B_t) mod 3) - 1 of k exact float32 products (matrices generated from the seed on
the device), commits to every row of every G_t with one Merkle root per device, fills the claimed VRAM from
the seed, and then reveals the rows and memory values the cloud picks. The server's side, and the exact
definition of every number here, is layers/depu/depu/agents/proofwork.py; tests check that both agree.

Nothing here can make a slower device pass: the deadline counts from the moment the server issued the seed,
and the rows it checks are chosen only after the roots arrive. A chain that cannot finish in time is
abandoned (the late commit fails the challenge) rather than left running on the GPU.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA numbers devices like NVML does

log = logging.getLogger(__name__)

MASK32 = 0xFFFFFFFF
MIX = 0x45D9F3B
MAX_R = 4095
EXACT_LIMIT = 2**24 - 1
MEMORY_MASK = 0x7FFFFFFF
MEMORY_STRIDE = 0x9E3779B1
GENERATE_ROWS = 1024  # rows generated at once: bounds the int64 temporaries to GENERATE_ROWS x n x 8 bytes
HASH_ROWS = 512  # rows hashed per task (hashlib lets go of the GIL, so the tasks run on several cores)
PRODUCT_ROWS = 256  # rows of a product computed between two looks at the deadline


class TooLate(RuntimeError):
    """The chain did not finish within the deadline on this device."""


def _torch():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would round: the products must be exact
    torch.set_float32_matmul_precision("highest")
    return torch


def key(seed: str, label: str) -> int:
    return int.from_bytes(hashlib.sha256(bytes.fromhex(seed) + label.encode()).digest()[:4], "big")


def mix(x):
    """proofwork.mix on an int64 tensor (every intermediate stays below 2**59)."""
    x = x & MASK32
    x = (((x >> 16) ^ x) * MIX) & MASK32
    x = (((x >> 16) ^ x) * MIX) & MASK32
    return (x >> 16) ^ x


def _mix_int(x: int) -> int:
    x &= MASK32
    x = (((x >> 16) ^ x) * MIX) & MASK32
    x = (((x >> 16) ^ x) * MIX) & MASK32
    return (x >> 16) ^ x


def raw_block(k: int, rows, columns):
    return mix(mix(rows ^ k)[:, None] ^ columns[None, :])


def matrix(k: int, n: int, device, r: int | None):
    """A (r None: entries in {-1,0,1}) or B_t (entries in [-r, r]) as float32 on ``device``."""
    torch = _torch()
    out = torch.empty((n, n), dtype=torch.float32, device=device)
    columns = torch.arange(n, dtype=torch.int64, device=device)
    for start in range(0, n, GENERATE_ROWS):
        rows = torch.arange(start, min(n, start + GENERATE_ROWS), dtype=torch.int64, device=device)
        block = raw_block(k, rows, columns)
        block = block % 3 - 1 if r is None else block % (2 * r + 1) - r
        out[start:start + len(rows)] = block.to(torch.float32)
    return out


def pack(g):
    """Rows of a {-1,0,1} float matrix, four entries a byte (lowest bits first), as a CPU uint8 array."""
    torch = _torch()
    u = (g + 1).to(torch.uint8).reshape(g.shape[0], g.shape[1] // 4, 4)
    packed = u[..., 0] | (u[..., 1] << 2) | (u[..., 2] << 4) | (u[..., 3] << 6)
    return packed.cpu().numpy()


def leaf(device: int, step: int, row: int, packed: bytes) -> bytes:
    return hashlib.sha256(b"depu-row" + device.to_bytes(2, "big") + step.to_bytes(4, "big")
                          + row.to_bytes(4, "big") + packed).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Merkle:
    """A tree over a power-of-two count of leaves; every level kept, for proofs."""

    def __init__(self, leaves: list[bytes]):
        if not leaves or len(leaves) & (len(leaves) - 1):
            raise ValueError("a power-of-two count of leaves is needed")
        self.levels = [leaves]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([node(below[i], below[i + 1]) for i in range(0, len(below), 2)])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[str]:
        siblings = []
        for level in self.levels[:-1]:
            siblings.append(level[index ^ 1].hex())
            index >>= 1
        return siblings


@dataclass
class DeviceWork:
    """What one device computed: the packed rows of every step (host memory), their tree, its memory."""

    index: int
    rows: list = field(default_factory=list)  # rows[t-1] = packed G_t (n x n/4 uint8)
    tree: Merkle | None = None
    memory: list = field(default_factory=list)  # the filled chunks, kept on the device until the reveal


class Prover:
    """Computes a challenge on a list of torch devices. ``product`` is the one step a device does; tests
    subclass it to model slow or lying hardware."""

    def __init__(self, devices: list, hash_threads: int = 4):
        self.devices = devices
        self.hash_threads = hash_threads

    def product(self, g, b, deadline: float):
        """g · b in row blocks, giving up between blocks once the deadline has passed (a device far too slow
        for its claimed class stops within a fraction of one product, instead of holding the GPU)."""
        torch = _torch()
        out = torch.empty_like(g)
        block_seconds = 0.0
        for start in range(0, g.shape[0], PRODUCT_ROWS):
            if time.time() + block_seconds > deadline:  # the next block alone would end past it
                raise TooLate("this device cannot finish the chain within the deadline")
            began = time.time()
            out[start:start + PRODUCT_ROWS] = g[start:start + PRODUCT_ROWS] @ b
            block_seconds = time.time() - began  # on a GPU the launch returns at once: no prediction, no harm
        return out

    def fill_memory(self, work: DeviceWork, device, seed: str, memory_mb: int, chunk_mb: int) -> None:
        """Fill ``memory_mb`` of the device from the seed, in chunks kept allocated through the chain, so a
        device with less memory than it claims fails with an allocation error. Not done on a CPU (its RAM is
        the host's; docs/scheduling.md), so a CPU that claims VRAM cannot answer the memory samples."""
        if memory_mb <= 0 or device.type != "cuda":
            return
        torch = _torch()
        k = key(seed, f"M{work.index}")
        elements = chunk_mb * 2**20 // 4
        for chunk in range(max(1, memory_mb // chunk_mb)):
            data = torch.empty(elements, dtype=torch.int32, device=device)
            step = 1 << 24
            base = _mix_int(k ^ chunk)
            for start in range(0, elements, step):
                offsets = torch.arange(start, min(elements, start + step), dtype=torch.int64, device=device)
                data[start:start + len(offsets)] = ((offsets * MEMORY_STRIDE + base) & MEMORY_MASK).to(torch.int32)
            work.memory.append(data)
        torch.cuda.synchronize(device)

    def compute(self, challenge: dict, started: float) -> list[DeviceWork]:
        works = [DeviceWork(index) for index in range(int(challenge["devices"]))]
        if len(self.devices) < len(works):
            raise RuntimeError(f"the challenge covers {len(works)} devices, this agent has {len(self.devices)}")
        errors: list[BaseException] = []

        def one(work: DeviceWork) -> None:
            try:
                self._chain(work, self.devices[work.index], challenge, started)
            except BaseException as error:  # noqa: BLE001 - reported below, per device
                errors.append(error)

        threads = [threading.Thread(target=one, args=(work,), daemon=True) for work in works]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return works

    def _chain(self, work: DeviceWork, device, challenge: dict, started: float) -> None:
        torch = _torch()
        if device.type == "cpu":
            # one thread: on a machine whose cores are shared, more threads spin against each other and run
            # a hundred times slower; one core alone is well above the CPU class's expected speed
            torch.set_num_threads(1)
        seed, n, steps = challenge["seed"], int(challenge["n"]), int(challenge["steps"])
        deadline = started + float(challenge["deadline_seconds"])
        self.fill_memory(work, device, seed, int(challenge.get("memory_mb") or 0),
                         int(challenge.get("memory_chunk_mb") or 256))
        r = min(MAX_R, EXACT_LIMIT // n)
        g = matrix(key(seed, f"A{work.index}"), n, device, None)
        leaves: list[bytes] = []
        with ThreadPoolExecutor(self.hash_threads) as pool:
            for step in range(1, steps + 1):
                b = matrix(key(seed, f"B{work.index}.{step}"), n, device, r)
                g = torch.remainder(self.product(g, b, deadline), 3) - 1
                del b
                packed = pack(g)
                work.rows.append(packed)
                blocks = [(start, min(n, start + HASH_ROWS)) for start in range(0, n, HASH_ROWS)]
                for hashed in pool.map(lambda block, s=step, p=packed: [
                        leaf(work.index, s, i, p[i].tobytes()) for i in range(*block)], blocks):
                    leaves.extend(hashed)
                if time.time() > deadline:
                    raise TooLate(f"step {step} of {steps} done after the {challenge['deadline_seconds']} s deadline")
        work.tree = Merkle(leaves)

    def reveal(self, works: list[DeviceWork], checks: list[dict]) -> list[dict]:
        answers = []
        for work, check in zip(works, checks):
            n = work.rows[0].shape[0]
            rows = []
            for item in check.get("rows", []):
                step, row = int(item["step"]), int(item["row"])
                answer = self._row(work, step, row, n)
                if step > 1:
                    answer["previous"] = self._row(work, step - 1, row, n)
                rows.append(answer)
            memory = []
            for chunk, offset in check.get("memory", []):
                if int(chunk) >= len(work.memory):
                    memory = None
                    break
                memory.append(int(work.memory[int(chunk)][int(offset)].item()))
            answers.append({"rows": rows, "memory": memory})
        return answers

    @staticmethod
    def _row(work: DeviceWork, step: int, row: int, n: int) -> dict:
        return {"row": base64.b64encode(work.rows[step - 1][row].tobytes()).decode(),
                "proof": work.tree.proof((step - 1) * n + row)}


def torch_devices(gpus: list) -> list:
    torch = _torch()
    return [torch.device("cpu") if gpu.is_cpu else torch.device(f"cuda:{gpu.index}") for gpu in gpus]


def answer(api, prover: Prover) -> dict:
    """Ask for a challenge, compute it, commit, reveal; returns the cloud's verdict (passed, verdict)."""
    status, challenge = api.post("/agent/challenge", {}, attempts=2)
    if status != 200 or not challenge.get("challenge_id"):
        return {"passed": False, "verified": False,
                "verdict": f"no challenge: HTTP {status} {challenge.get('error', '')}".strip()}
    started = time.time()
    log.info("hardware challenge %s: %s products of %s x %s on %s device(s), %s MB VRAM, deadline %.1f s",
             challenge["challenge_id"], challenge["steps"], challenge["n"], challenge["n"], challenge["devices"],
             challenge.get("memory_mb"), challenge["deadline_seconds"])
    works: list[DeviceWork] | None
    try:
        works = prover.compute(challenge, started)
        roots = [work.tree.root.hex() for work in works]
    except Exception as error:  # too slow, out of memory, a device error: the empty commit below fails it
        log.error("hardware challenge could not be computed: %s", error)
        works, roots = None, []
    status, checks = api.post("/agent/challenge/commit", {"challenge_id": challenge["challenge_id"],
                                                           "roots": roots}, attempts=2)
    if status != 200 or "checks" not in checks:
        return checks if "passed" in checks else {
            "passed": False, "verified": False, "verdict": checks.get("error") or f"HTTP {status}"}
    status, outcome = api.post("/agent/challenge/reveal", {
        "challenge_id": challenge["challenge_id"], "devices": prover.reveal(works or [], checks["checks"])},
        attempts=2)
    for work in works or []:
        work.memory.clear()
    log.info("hardware challenge %s: %s", challenge["challenge_id"], outcome.get("verdict"))
    return outcome if status == 200 else {"passed": False, "verified": False,
                                          "verdict": outcome.get("error") or f"HTTP {status}"}
