"""Composing an export's part objects into the one file the user gets, with bounded memory and no /tmp.

The parts are written chunk by chunk, across exporter runs (``depu.analytics.export_run``); the deliverable is
uploaded as an S3 multipart upload fed as it is produced:

- CSV and JSON lines are byte concatenations of their parts (only part 0 carries the CSV header). A part of at
  least ``MIN_PART_BYTES`` that starts on a part boundary is copied inside S3 (UploadPartCopy, no bytes
  through the function); smaller ones are streamed through a buffer that is uploaded every ``PART_BYTES``.
- Parquet parts are files of their own; their row groups are streamed into one ``ParquetWriter`` whose sink is
  the multipart upload, so memory holds one part's row group and one buffer, whatever the range.

A file smaller than one buffer is a single PutObject. An upload that fails is aborted, so no half file is left
under the export's key, and the parts stay for the retry.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

MIN_PART_BYTES = 5 * 1024 * 1024  # S3: every part of a multipart upload but the last is at least 5 MiB
PART_BYTES = 8 * 1024 * 1024  # the streamed buffer: memory per compose, and ~78 GiB at S3's 10,000 parts
MAX_UPLOAD_PARTS = 10_000
READ_BYTES = 1024 * 1024


class ExportTooLarge(RuntimeError):
    """The file would need more than S3's 10,000 upload parts."""


class ComposeOutOfTime(RuntimeError):
    """The run's time is up before the file is composed: raised (and the upload aborted) before Lambda's
    timeout would kill the run silently, so the failure is retried and, on the last try, told to the user."""


class MultipartSink:
    """A write-only file object whose bytes become one S3 object (``tell`` for pyarrow's writer)."""

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str):
        self.s3, self.bucket, self.key, self.content_type = s3, bucket, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written = 0
        self.closed = False

    # the file-object surface pyarrow needs
    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        """Buffered bytes go out in ``PART_BYTES`` parts; nothing to do until then."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        self._written += len(data)
        while len(self._buffer) >= PART_BYTES:
            self._send(bytes(self._buffer[:PART_BYTES]))
            del self._buffer[:PART_BYTES]
        return len(data)

    def copy_object(self, source_key: str, size: int) -> None:
        """Append a whole object: copied inside S3 when S3 allows it here, streamed otherwise."""
        if len(self._buffer) >= MIN_PART_BYTES:  # a legal part already: send it, so the copy starts a part
            self._send(bytes(self._buffer))
            self._buffer.clear()
        if not self._buffer and size >= MIN_PART_BYTES:
            self._start()
            number = self._next_number()
            answer = self.s3.upload_part_copy(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                              PartNumber=number,
                                              CopySource={"Bucket": self.bucket, "Key": source_key})
            self._parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            self._written += size
            return
        body = self.s3.get_object(Bucket=self.bucket, Key=source_key)["Body"]
        for piece in iter(lambda: body.read(READ_BYTES), b""):
            self.write(piece)

    def close(self) -> None:
        if self.closed:
            return
        if self._upload_id is None:  # all of it fits one buffer: one plain object
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                               ContentType=self.content_type)
        else:
            if self._buffer:
                self._send(bytes(self._buffer))
            self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                              MultipartUpload={"Parts": self._parts})
        self._buffer.clear()
        self.closed = True

    def abort(self) -> None:
        if self._upload_id is not None and not self.closed:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
        self.closed = True

    def _start(self) -> None:
        if self._upload_id is None:
            self._upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                              ContentType=self.content_type)["UploadId"]

    def _next_number(self) -> int:
        if len(self._parts) >= MAX_UPLOAD_PARTS:
            raise ExportTooLarge(f"more than {MAX_UPLOAD_PARTS:,} upload parts")
        return len(self._parts) + 1

    def _send(self, data: bytes) -> None:
        self._start()
        number = self._next_number()
        answer = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                     PartNumber=number, Body=data)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})


def compose(s3: Any, bucket: str, key: str, content_type: str, fmt: str, part_keys: Iterable[str],
            in_time: Callable[[], bool] = lambda: True) -> int:
    """Write the parts, in order, as one object at ``key``; returns its size in bytes. ``in_time`` is asked
    before each part (Parquet: each row group); False raises ``ComposeOutOfTime``."""
    sink = MultipartSink(s3, bucket, key, content_type)
    try:
        if fmt == "parquet":
            _compose_parquet(s3, bucket, sink, part_keys, in_time)
        else:
            for part_key in part_keys:
                _check(in_time)
                size = int(s3.head_object(Bucket=bucket, Key=part_key)["ContentLength"])
                sink.copy_object(part_key, size)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return sink.tell()


def _check(in_time: Callable[[], bool]) -> None:
    if not in_time():
        raise ComposeOutOfTime("the exporter run ended before the file was composed")


def _compose_parquet(s3: Any, bucket: str, sink: MultipartSink, part_keys: Iterable[str],
                     in_time: Callable[[], bool]) -> None:
    import io

    import pyarrow.parquet as pq

    writer = None
    for part_key in part_keys:
        part = pq.ParquetFile(io.BytesIO(s3.get_object(Bucket=bucket, Key=part_key)["Body"].read()))
        for group in range(part.num_row_groups):
            _check(in_time)
            table = part.read_row_group(group)
            if writer is None:
                writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
            writer.write_table(table)
    if writer is not None:
        writer.close()
