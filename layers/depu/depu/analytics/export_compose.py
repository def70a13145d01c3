"""Composing an export's part objects into the one file the user gets: bounded memory, no /tmp, and
resumable across exporter runs at any part boundary.

The parts are written chunk by chunk, across exporter runs (``depu.analytics.export_run``); the deliverable is
one S3 multipart upload, fed part by part:

- CSV and JSON lines are byte concatenations of their parts (only part 0 carries the CSV header).
- Parquet is ``PAR1``, then each part's *body* (its column chunks, bytes 4 to its footer), then one footer
  for all of them (``depu.analytics.export_parquet_footer``): row groups are copied as they are, never
  decoded; only the part's offset indexes (page locations are absolute offsets) are written again.

A part's bytes of at least ``MIN_PART_BYTES`` that start an upload part are copied inside S3 (UploadPartCopy,
no bytes through the function); smaller ones are streamed through a buffer that is uploaded every
``PART_BYTES``. Where each upload part starts and what it holds follows from the parts alone, never from
when a run stops, so a run that composes the same stretch again (a redelivered message, a twin run) uploads
the same bytes under the same part numbers.

A run composes until ``in_time`` says no (at least one part per run), then returns a ``ComposeState``: the
upload id, the next part, the upload parts done and the buffer, which is saved at ``leftover_key``, one key
per compose step (for Parquet, the footer so far too, at ``footer_key``: the last run writes the footer
from it, without reading every part again). The caller checkpoints that state conditionally and hands
over; the next run resumes it.
CompleteMultipartUpload lists the upload's parts (S3 holds their ETags) and takes the first
``upload_parts``: one uploaded by a run that died before its checkpoint is left out, and uploaded again by
the run that resumes. A file smaller than one buffer is a single PutObject, composed in one go.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from botocore.exceptions import ClientError

from depu.analytics import export_parquet_footer as parquet_footer

MIN_PART_BYTES = 5 * 1024 * 1024  # S3: every part of a multipart upload but the last is at least 5 MiB
PART_BYTES = 8 * 1024 * 1024  # the streamed buffer: memory per compose, and ~78 GiB at S3's 10,000 parts
MAX_UPLOAD_PARTS = 10_000
SINGLE_PUT_BYTES = PART_BYTES  # parts smaller than this in all make one PutObject, composed in one go
READ_BYTES = 1024 * 1024


class ExportTooLarge(RuntimeError):
    """The file would need more than S3's 10,000 upload parts."""


class ComposeSuperseded(RuntimeError):
    """A twin run registered its multipart upload for this export first; this run's upload was aborted."""


@dataclass(frozen=True)
class ComposeState:
    """How far the compose has come: checkpointed between runs (``depu.analytics.export_checkpoint``)."""

    upload_id: str | None = None
    next_part: int = 0  # the first export part not yet in the upload or the buffer
    upload_parts: int = 0  # upload parts 1..n are final
    written: int = 0  # bytes of the file so far, the buffer included
    leftover: int = 0  # bytes in the buffer, saved at leftover_key(key, next_part) when not 0
    done: bool = False  # the file is whole at its key (``written`` is its size)


def leftover_prefix(key: str) -> str:
    """Where the saved buffers of the file at ``key`` lie (deleted with the parts once it is delivered)."""
    return key.rsplit("/", 1)[0] + "/compose/"


def footer_key(key: str, step: int) -> str:
    """A Parquet compose's footer so far (``export_parquet_footer.Merged``), saved by a run that stopped
    before part ``step``: the last run reads this one object, not every part's footer again."""
    return f"{leftover_prefix(key)}{step:06d}.footer"


def leftover_key(key: str, step: int) -> str:
    """The buffer saved by a run that stopped before part ``step``: one key per step, so a late twin that
    stopped elsewhere never overwrites the buffer a checkpoint points at."""
    return f"{leftover_prefix(key)}{step:06d}.buffer"


class MultipartSink:
    """Bytes appended in order to a multipart upload, resumed from a ``ComposeState`` and its buffer."""

    def __init__(self, s3: Any, bucket: str, key: str, state: ComposeState, buffer: bytes = b""):
        self.s3, self.bucket, self.key = s3, bucket, key
        self.upload_id, self.upload_parts, self.written = state.upload_id, state.upload_parts, state.written
        self.buffer = bytearray(buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += data
        self.written += len(data)
        while len(self.buffer) >= PART_BYTES:
            self._send(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]

    def copy_range(self, source_key: str, start: int, end: int, whole: bool) -> None:
        """Append bytes ``[start, end)`` of an object (``whole``: all of it): copied inside S3 when they
        start an upload part and are big enough to be one, streamed otherwise."""
        size = end - start
        if len(self.buffer) >= MIN_PART_BYTES:  # a legal part already: send it, so the copy starts a part
            self._send(bytes(self.buffer))
            self.buffer.clear()
        if not self.buffer and size >= MIN_PART_BYTES:
            number = self._next_number()
            source: dict[str, Any] = {"CopySource": {"Bucket": self.bucket, "Key": source_key}}
            if not whole:
                source["CopySourceRange"] = f"bytes={start}-{end - 1}"
            self.s3.upload_part_copy(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                     PartNumber=number, **source)
            self.upload_parts = number
            self.written += size
            return
        if size == 0:
            return
        options = {} if whole else {"Range": f"bytes={start}-{end - 1}"}
        body = self.s3.get_object(Bucket=self.bucket, Key=source_key, **options)["Body"]
        for piece in iter(lambda: body.read(READ_BYTES), b""):
            self.write(piece)

    def complete(self) -> None:
        if self.buffer:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                          MultipartUpload={"Parts": self._final_parts()})

    def _final_parts(self) -> list[dict[str, Any]]:
        """Parts 1..upload_parts as S3 holds them (a later number is a dead run's, never checkpointed)."""
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            page = self.s3.list_parts(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                      PartNumberMarker=marker, MaxParts=1000)
            parts += [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in page.get("Parts", [])
                      if p["PartNumber"] <= self.upload_parts]
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        if [p["PartNumber"] for p in parts] != list(range(1, self.upload_parts + 1)):
            raise RuntimeError(f"upload {self.upload_id} lacks some of its parts 1..{self.upload_parts}")
        return parts

    def _next_number(self) -> int:
        if self.upload_parts >= MAX_UPLOAD_PARTS:
            raise ExportTooLarge(f"more than {MAX_UPLOAD_PARTS:,} upload parts")
        return self.upload_parts + 1

    def _send(self, data: bytes) -> None:
        number = self._next_number()
        self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                            Body=data)
        self.upload_parts = number


def compose(s3: Any, bucket: str, key: str, content_type: str, fmt: str, part_keys: Sequence[str],
            parts_bytes: int, state: ComposeState = ComposeState(),
            in_time: Callable[[], bool] = lambda: True,
            register: Callable[[ComposeState], bool] = lambda state: True,
            composed: Callable[[int, int], None] = lambda done, written: None) -> ComposeState:
    """Compose from ``state`` on: the parts at ``part_keys``, in order, as one object at ``key``.

    ``parts_bytes`` (the parts' total size) picks a single PutObject under one buffer. ``in_time`` is asked
    before each part after the first of this run; when it says no, the buffer is saved and the state
    returned (``done`` False). A new upload is passed to ``register`` (a conditional checkpoint); False means
    a twin's is registered, and this run's upload is aborted (``ComposeSuperseded``). ``composed(parts done,
    bytes written)`` is told after each part of a multipart compose (the progress message)."""
    if state.done:
        return state
    if state.upload_id is None and parts_bytes < SINGLE_PUT_BYTES:
        return _compose_small(s3, bucket, key, content_type, fmt, part_keys)
    if state.upload_id is None:
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"]
        state = replace(state, upload_id=upload_id)
        if not register(state):
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise ComposeSuperseded(f"a twin run composes {key}")
    else:
        size = _exists(s3, bucket, key)
        if size is not None:  # completed by a run that died before its checkpoint
            return replace(state, next_part=len(part_keys), written=size, leftover=0, done=True)
    buffer = b""
    if state.leftover:
        buffer = s3.get_object(Bucket=bucket, Key=leftover_key(key, state.next_part))["Body"].read()
    merged = _merged_so_far(s3, bucket, key, part_keys, state.next_part) if fmt == "parquet" else None
    sink = MultipartSink(s3, bucket, key, state, buffer)
    try:
        index = _append_parts(s3, bucket, fmt, part_keys, state.next_part, sink, in_time, composed, merged)
        if index < len(part_keys):
            if sink.buffer:
                s3.put_object(Bucket=bucket, Key=leftover_key(key, index), Body=bytes(sink.buffer))
            if merged is not None:
                s3.put_object(Bucket=bucket, Key=footer_key(key, index), Body=merged.to_bytes())
            return replace(state, next_part=index, upload_parts=sink.upload_parts, written=sink.written,
                           leftover=len(sink.buffer))
        if merged is not None:
            if merged.end != sink.written:
                raise RuntimeError(f"the parts' bodies end at {merged.end}, the upload holds {sink.written}")
            sink.write(merged.footer())
        sink.complete()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchUpload" or _exists(s3, bucket, key) is None:
            raise
        # a twin completed the upload while this run composed: the file is there, the same bytes
    size = _exists(s3, bucket, key)
    return replace(state, next_part=len(part_keys), upload_parts=sink.upload_parts, written=size or 0,
                   leftover=0, done=True)


def abort(s3: Any, bucket: str, key: str, state: ComposeState) -> None:
    """Abort the upload of a compose that is given up (nothing if there is none, or it is gone)."""
    if state.upload_id is None or state.done:
        return
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=state.upload_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise


def _append_parts(s3: Any, bucket: str, fmt: str, part_keys: Sequence[str], first: int, sink: MultipartSink,
                  in_time: Callable[[], bool], composed: Callable[[int, int], None],
                  merged: "parquet_footer.Merged | None" = None) -> int:
    """Append parts from ``first`` while there is time (at least one); returns the next part's index.
    Parquet parts are added to ``merged``, the footer so far."""
    index = first
    if fmt == "parquet" and index == 0:
        sink.write(parquet_footer.MAGIC)
    while index < len(part_keys):
        if index > first and not in_time():
            return index
        part_key = part_keys[index]
        size = int(s3.head_object(Bucket=bucket, Key=part_key)["ContentLength"])
        if fmt == "parquet":
            metadata, placed = _parquet_layout(s3, bucket, part_key, size, sink.written - len(parquet_footer.MAGIC))
            if merged is not None:
                merged.add(metadata, placed)
            sink.copy_range(part_key, len(parquet_footer.MAGIC), placed.tail_start, whole=False)
            sink.write(placed.tail)
        else:
            sink.copy_range(part_key, 0, size, whole=True)
        index += 1
        composed(index, sink.written)
    return index


def _compose_small(s3: Any, bucket: str, key: str, content_type: str, fmt: str,
                   part_keys: Sequence[str]) -> ComposeState:
    """A file that fits one buffer: read whole, put once."""
    out = bytearray(parquet_footer.MAGIC if fmt == "parquet" else b"")
    merged = parquet_footer.Merged()
    for part_key in part_keys:
        data = s3.get_object(Bucket=bucket, Key=part_key)["Body"].read()
        if fmt == "parquet":
            start, end = parquet_footer.body_bounds(data[-8:], len(data))
            metadata, placed = _layout_of(data[end:-8], end, len(out) - len(parquet_footer.MAGIC),
                                          lambda first, last, data=data: data[first:last])
            merged.add(metadata, placed)
            data = data[start:placed.tail_start] + placed.tail
        out += data
    if fmt == "parquet":
        out += merged.footer()
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(out), ContentType=content_type)
    return ComposeState(next_part=len(part_keys), written=len(out), done=True)


def _merged_so_far(s3: Any, bucket: str, key: str, part_keys: Sequence[str],
                   step: int) -> "parquet_footer.Merged":
    """The footer of parts ``[0, step)``: the one the run that stopped at ``step`` saved (one GET), or,
    where there is none (a compose checkpointed before footers were saved), read again from those parts,
    laid out exactly as ``_append_parts`` laid them."""
    merged = parquet_footer.Merged()
    if step == 0:
        return merged
    try:
        return parquet_footer.Merged.from_bytes(
            s3.get_object(Bucket=bucket, Key=footer_key(key, step))["Body"].read())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    for part_key in part_keys[:step]:
        size = int(s3.head_object(Bucket=bucket, Key=part_key)["ContentLength"])
        merged.add(*_parquet_layout(s3, bucket, part_key, size, merged.end - len(parquet_footer.MAGIC)))
    return merged


def _parquet_layout(s3: Any, bucket: str, key: str, size: int, shift: int) -> tuple[Any, "parquet_footer.Layout"]:
    """A Parquet part's ``FileMetaData`` and how its body is laid in at ``shift`` (ranged GETs: its last
    8 bytes, its footer, and its offset indexes when it has them)."""
    _start, end = parquet_footer.body_bounds(_tail(s3, bucket, key, size), size)
    thrift = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={end}-{size - 9}")["Body"].read()

    def read(first: int, last: int) -> bytes:
        return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last - 1}")["Body"].read()

    return _layout_of(thrift, end, shift, read)


def _layout_of(thrift: bytes, body_end: int, shift: int,
               read: Callable[[int, int], bytes]) -> tuple[Any, "parquet_footer.Layout"]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(pa.BufferReader(parquet_footer.MAGIC + thrift + len(thrift).to_bytes(4, "little")
                                                + parquet_footer.MAGIC))
    return metadata, parquet_footer.layout(thrift, body_end, shift, read)


def _tail(s3: Any, bucket: str, key: str, size: int) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - 8}-{size - 1}")["Body"].read()


def _exists(s3: Any, bucket: str, key: str) -> int | None:
    """The object's size, or None when there is none."""
    try:
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
