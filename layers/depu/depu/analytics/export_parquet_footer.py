"""One Parquet footer for row groups copied byte for byte from several Parquet files into one.

A Parquet file is ``PAR1``, its column chunks (the *body*), a footer (a Thrift ``FileMetaData`` in the compact
protocol), the footer's length and ``PAR1``. Pages carry no positions; only the footer does, as absolute
offsets into the file. So the bodies of files with one schema can be concatenated behind one ``PAR1`` (each
copied inside S3, or streamed, and resumable at any file boundary) and followed by one footer: the first
file's ``FileMetaData`` with every file's row groups appended (pyarrow's ``append_row_groups``), whose offsets
are then moved by where each body landed. pyarrow cannot set those offsets, so ``shift_offsets`` rewrites them
in the encoded footer: it walks the compact protocol and copies every byte as it is, except the offset fields
below, which are re-encoded with the shift added. Everything a body's offsets can point at (column chunks,
dictionary pages, page indexes, bloom filters) lies inside the body, so one shift per body is exact.
"""
from __future__ import annotations

from typing import Any, Callable

MAGIC = b"PAR1"

# compact protocol type codes
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# the absolute offsets in parquet.thrift, by struct and field id
_FILE_ROW_GROUPS = 4  # FileMetaData.row_groups: list<RowGroup>
_ROW_GROUP_COLUMNS, _ROW_GROUP_FILE_OFFSET = 1, 5  # RowGroup.columns, RowGroup.file_offset
_CHUNK_FILE_OFFSET, _CHUNK_META, _CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX = 2, 3, 4, 6  # ColumnChunk
_META_OFFSETS = {9, 10, 11, 14}  # ColumnMetaData: data_page, index_page, dictionary_page, bloom_filter offsets


class FooterError(ValueError):
    """The bytes are not a Parquet footer this module can rewrite."""


def body_bounds(tail: bytes, size: int) -> tuple[int, int]:
    """The body's ``[start, end)`` in a Parquet file of ``size`` bytes whose last 8 bytes are ``tail``."""
    if len(tail) != 8 or tail[4:] != MAGIC:
        raise FooterError("not a Parquet file (no PAR1 at its end)")
    footer = int.from_bytes(tail[:4], "little")
    return len(MAGIC), size - 8 - footer


def encoded(metadata: Any) -> bytes:
    """The Thrift bytes of a pyarrow ``FileMetaData``."""
    import pyarrow as pa

    out = pa.BufferOutputStream()
    metadata.write_metadata_file(out)
    whole = out.getvalue().to_pybytes()  # PAR1, footer, length, PAR1
    return whole[len(MAGIC):-8]


def footer(metadatas: list[Any], body_sizes: list[int]) -> bytes:
    """The closing bytes of a file made of ``PAR1`` and these bodies in order: footer, its length, ``PAR1``.
    ``metadatas[i]`` is file i's ``FileMetaData``, ``body_sizes[i]`` its body's length."""
    shifts, position = [], len(MAGIC)
    for metadata, size in zip(metadatas, body_sizes):
        shifts += [position - len(MAGIC)] * metadata.num_row_groups
        position += size
    merged = metadatas[0]  # appended to in place
    for metadata in metadatas[1:]:
        merged.append_row_groups(metadata)
    thrift = shift_offsets(encoded(merged), shifts)
    return thrift + len(thrift).to_bytes(4, "little") + MAGIC


def shift_offsets(thrift: bytes, shifts: list[int]) -> bytes:
    """``FileMetaData`` bytes with every offset in row group ``j`` moved by ``shifts[j]``."""
    walker = _Walker(thrift)
    walker.struct(lambda field: walker.list_of_structs(walker.row_group_fields(shifts))
                  if field == _FILE_ROW_GROUPS else None)
    if walker.pos != len(thrift):
        raise FooterError("trailing bytes after the footer")
    if walker.row_groups != len(shifts):
        raise FooterError(f"{walker.row_groups} row groups, {len(shifts)} shifts")
    return bytes(walker.out)


class _Walker:
    """Reads a compact-protocol value and writes it again, changing only what a field handler asks for."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.out = data, 0, bytearray()
        self.row_groups = 0
        self.shift = 0

    # ---------------------------------------------------------------- raw reads and writes
    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise FooterError("the footer ends early")
        value = self.data[self.pos]
        self.pos += 1
        self.out.append(value)
        return value

    def _varint(self, copy: bool = True) -> int:
        value = shift = 0
        start = self.pos
        while True:
            if self.pos >= len(self.data):
                raise FooterError("the footer ends early")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if copy:
            self.out += self.data[start:self.pos]
        return value

    def _skip(self, count: int) -> None:
        if self.pos + count > len(self.data):
            raise FooterError("the footer ends early")
        self.out += self.data[self.pos:self.pos + count]
        self.pos += count

    def _shifted_i64(self) -> None:
        raw = self._varint(copy=False)
        value = ((raw >> 1) ^ -(raw & 1)) + self.shift  # zigzag
        zigzag = (value << 1) ^ (value >> 63)
        while True:
            byte = zigzag & 0x7F
            zigzag >>= 7
            if zigzag:
                self.out.append(byte | 0x80)
            else:
                self.out.append(byte)
                return

    # ---------------------------------------------------------------- values
    def value(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):  # a bool field's value is its header's type
            return
        if kind == _BYTE:
            self._skip(1)
        elif kind in (_I16, _I32, _I64):
            self._varint()
        elif kind == _DOUBLE:
            self._skip(8)
        elif kind == _BINARY:
            self._skip(self._varint())
        elif kind in (_LIST, _SET):
            size, element = self._list_header()
            for _ in range(size):
                self._element(element)
        elif kind == _MAP:
            size = self._varint()
            if size:
                types = self._byte()
                for _ in range(size):
                    self._element(types >> 4)
                    self._element(types & 0x0F)
        elif kind == _STRUCT:
            self.struct(lambda field: None)
        else:
            raise FooterError(f"unknown compact type {kind}")

    def _element(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):  # a bool inside a container is one byte
            self._skip(1)
        else:
            self.value(kind)

    def _list_header(self) -> tuple[int, int]:
        header = self._byte()
        size = header >> 4
        if size == 15:
            size = self._varint()
        return size, header & 0x0F

    def struct(self, handler: Callable[[int], Any]) -> None:
        """A struct; ``handler(field id)`` returns a callable that copies the field's value itself, or None
        to copy it as it is."""
        field = 0
        while True:
            header = self._byte()
            kind = header & 0x0F
            if kind == _STOP:
                return
            delta = header >> 4
            if delta:
                field += delta
            else:
                raw = self._varint()
                field = (raw >> 1) ^ -(raw & 1)
            special = handler(field)
            if special is None:
                self.value(kind)
            else:
                special(kind)

    def list_of_structs(self, each: Callable[[], None]) -> Callable[[int], None]:
        def copy(kind: int) -> None:
            size, element = self._list_header()
            if element != _STRUCT:
                raise FooterError("a list of structs was expected")
            for _ in range(size):
                each()
        return copy

    # ---------------------------------------------------------------- parquet.thrift
    def row_group_fields(self, shifts: list[int]) -> Callable[[], None]:
        def row_group() -> None:
            if self.row_groups >= len(shifts):
                raise FooterError("more row groups than shifts")
            self.shift = shifts[self.row_groups]
            self.row_groups += 1
            self.struct(self._row_group_field)
        return row_group

    def _row_group_field(self, field: int) -> Callable[[int], None] | None:
        if field == _ROW_GROUP_COLUMNS:
            return self.list_of_structs(lambda: self.struct(self._chunk_field))
        if field == _ROW_GROUP_FILE_OFFSET:
            return self._offset
        return None

    def _chunk_field(self, field: int) -> Callable[[int], None] | None:
        if field in (_CHUNK_FILE_OFFSET, _CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX):
            return self._offset
        if field == _CHUNK_META:
            return lambda kind: self.struct(lambda inner: self._offset if inner in _META_OFFSETS else None)
        return None

    def _offset(self, kind: int) -> None:
        if kind != _I64:
            raise FooterError("an offset that is not an i64")
        self._shifted_i64()
