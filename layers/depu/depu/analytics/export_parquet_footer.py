"""One Parquet footer for row groups copied byte for byte from several Parquet files into one.

A Parquet file is ``PAR1``, its column chunks (the *body*), a footer (a Thrift ``FileMetaData`` in the compact
protocol), the footer's length and ``PAR1``. Pages carry no positions; only the footer does, as absolute
offsets into the file. So the bodies of files with one schema can be concatenated behind one ``PAR1`` (each
copied inside S3, or streamed, and resumable at any file boundary) and followed by one footer: the first
file's ``FileMetaData`` with every file's row groups appended (pyarrow's ``append_row_groups``), whose offsets
are then moved by where each body landed. pyarrow cannot set those offsets, so ``shift_offsets`` rewrites them
in the encoded footer: it walks the compact protocol and copies every byte as it is, except the offset fields
below, which are re-encoded with the shift added. Everything a body's offsets can point at (column chunks,
dictionary pages, page indexes, bloom filters) lies inside the body, so one shift per body is exact, but
for one thing: an ``OffsetIndex`` (the page index's page locations) holds absolute page offsets too, and it
lies in the body. So a body is copied as it is up to its first offset index (``Layout.tail_start``), and
from there on (the offset indexes, and whatever lies between them) it is written again with each
``PageLocation.offset`` shifted (``layout``). A re-encoded offset can take another byte, so the footer's
``offset_index_offset``/``length`` and any offset after the first offset index are *relocated* (where that
structure landed), not merely shifted. A body without page indexes is copied whole, as before.
"""
from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Any, Callable

MAGIC = b"PAR1"

# compact protocol type codes
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# the absolute offsets in parquet.thrift, by struct and field id
_FILE_ROW_GROUPS = 4  # FileMetaData.row_groups: list<RowGroup>
_ROW_GROUP_COLUMNS, _ROW_GROUP_FILE_OFFSET = 1, 5  # RowGroup.columns, RowGroup.file_offset
_CHUNK_FILE_OFFSET, _CHUNK_META, _CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX = 2, 3, 4, 6  # ColumnChunk
_CHUNK_OFFSET_INDEX_LENGTH = 5  # ColumnChunk.offset_index_length: i32
_OFFSET_INDEX_PAGES, _PAGE_OFFSET = 1, 1  # OffsetIndex.page_locations: list<PageLocation>, PageLocation.offset
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


@dataclass(frozen=True)
class Layout:
    """How one file's body is laid into the composed file at ``shift`` bytes past its own position: bytes
    ``[4, tail_start)`` as they are, then ``tail`` (the rest of the body, offset indexes rewritten)."""

    shift: int
    tail_start: int
    tail: bytes = b""
    tail_size: int = 0  # len(tail), kept when the tail itself is dropped (``Merged``)
    # (old start, new start, rewritten) of each stretch of the tail, in order (file-relative positions)
    stretches: tuple[tuple[int, int, bool], ...] = ()
    lengths: dict[int, int] = field(default_factory=dict)  # an offset index's old offset -> its new length

    @property
    def body_size(self) -> int:
        return self.tail_start - len(MAGIC) + self.tail_size

    def relocate(self, offset: int) -> int:
        """Where a structure at ``offset`` in its own file lies in the composed file."""
        if offset < self.tail_start:
            return offset + self.shift
        index = bisect_right([start for start, _new, _rewritten in self.stretches], offset) - 1
        if index < 0:
            raise FooterError(f"offset {offset} is in no stretch of the body")
        start, new, rewritten = self.stretches[index]
        if rewritten and offset != start:
            raise FooterError(f"offset {offset} points inside an offset index")
        return new + (offset - start) + self.shift


def offset_indexes(thrift: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of every column chunk's offset index named in a ``FileMetaData``."""
    walker = _Walker(thrift)
    walker.collect = []
    walker.struct(lambda field: walker.list_of_structs(walker.row_group_fields(None))
                  if field == _FILE_ROW_GROUPS else None)
    return sorted(walker.collect)


def layout(thrift: bytes, body_end: int, shift: int, read: Callable[[int, int], bytes]) -> Layout:
    """The layout of a file whose footer is ``thrift`` and body ends at ``body_end``, shifted by ``shift``;
    ``read(start, end)`` returns its bytes ``[start, end)`` (only the tail is read, and only when there are
    offset indexes)."""
    indexes = offset_indexes(thrift)
    if not indexes:
        return Layout(shift, body_end)
    tail_start = indexes[0][0]
    data = read(tail_start, body_end)
    out, stretches, lengths, position = bytearray(), [], {}, tail_start
    for offset, length in indexes:
        if offset < position or offset + length > body_end:
            raise FooterError("offset indexes overlap or leave the body")
        if offset > position:  # whatever lies between them (a column index, a bloom filter): as it is
            stretches.append((position, tail_start + len(out), False))
            out += data[position - tail_start:offset - tail_start]
        walker = _Walker(data[offset - tail_start:offset - tail_start + length])
        walker.shift, walker.below = shift, tail_start  # pages lie before every index
        walker.struct(lambda field: walker.list_of_structs(lambda: walker.struct(
            lambda inner: walker._offset if inner == _PAGE_OFFSET else None))
            if field == _OFFSET_INDEX_PAGES else None)
        if walker.pos != length:
            raise FooterError("an offset index is not as long as the footer says")
        stretches.append((offset, tail_start + len(out), True))
        lengths[offset] = len(walker.out)
        out += walker.out
        position = offset + length
    if position < body_end:
        stretches.append((position, tail_start + len(out), False))
        out += data[position - tail_start:]
    return Layout(shift, tail_start, bytes(out), len(out), tuple(stretches), lengths)


@dataclass
class Merged:
    """The footer of the files laid in so far: their row groups merged (offsets still each file's own) and
    each file's layout. Saved between compose runs (``to_bytes``), so the run that lays in the last file
    writes the footer from one saved object instead of reading every file's footer again."""

    metadata: Any = None
    layouts: list[Layout] = field(default_factory=list)
    row_groups: list[int] = field(default_factory=list)  # per file

    def add(self, metadata: Any, placed: Layout) -> None:
        if self.metadata is None:
            self.metadata = metadata  # appended to in place from now on
        else:
            self.metadata.append_row_groups(metadata)
        self.layouts.append(replace(placed, tail=b""))
        self.row_groups.append(metadata.num_row_groups)

    @property
    def end(self) -> int:
        """Where the last body laid in ends (where the footer goes)."""
        if not self.layouts:
            return len(MAGIC)
        last = self.layouts[-1]
        return len(MAGIC) + last.shift + last.body_size

    def footer(self) -> bytes:
        """The closing bytes of the file: footer, its length, ``PAR1``."""
        per_row_group = [each for each, count in zip(self.layouts, self.row_groups) for _ in range(count)]
        thrift = relocate_offsets(encoded(self.metadata), per_row_group)
        return thrift + len(thrift).to_bytes(4, "little") + MAGIC

    def to_bytes(self) -> bytes:
        thrift = encoded(self.metadata) if self.metadata is not None else b""
        layouts = [{"shift": each.shift, "tail_start": each.tail_start, "tail_size": each.tail_size,
                    "stretches": each.stretches, "lengths": sorted(each.lengths.items()), "row_groups": count}
                   for each, count in zip(self.layouts, self.row_groups)]
        return len(thrift).to_bytes(4, "little") + thrift + json.dumps(layouts).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Merged":
        import pyarrow as pa
        import pyarrow.parquet as pq

        size = int.from_bytes(data[:4], "little")
        thrift = data[4:4 + size]
        metadata = (pq.read_metadata(pa.BufferReader(MAGIC + thrift + size.to_bytes(4, "little") + MAGIC))
                    if size else None)
        layouts = json.loads(data[4 + size:])
        return cls(metadata, [Layout(each["shift"], each["tail_start"], b"", each["tail_size"],
                                     tuple(tuple(stretch) for stretch in each["stretches"]),
                                     {int(old): int(new) for old, new in each["lengths"]}) for each in layouts],
                   [int(each["row_groups"]) for each in layouts])


def footer(metadatas: list[Any], layouts: list[Layout]) -> bytes:
    """The closing bytes of a file made of ``PAR1`` and these bodies in order: footer, its length, ``PAR1``.
    ``metadatas[i]`` is file i's ``FileMetaData``, ``layouts[i]`` how its body was laid in."""
    merged = Merged()
    for metadata, placed in zip(metadatas, layouts):
        merged.add(metadata, placed)
    return merged.footer()


def shift_offsets(thrift: bytes, shifts: list[int]) -> bytes:
    """``FileMetaData`` bytes with every offset in row group ``j`` moved by ``shifts[j]`` (bodies copied
    whole: no offset indexes)."""
    return relocate_offsets(thrift, [Layout(shift, 1 << 62) for shift in shifts])


def relocate_offsets(thrift: bytes, layouts: list[Layout]) -> bytes:
    """``FileMetaData`` bytes with every offset in row group ``j`` relocated by ``layouts[j]``."""
    walker = _Walker(thrift)
    walker.struct(lambda field: walker.list_of_structs(walker.row_group_fields(layouts))
                  if field == _FILE_ROW_GROUPS else None)
    if walker.pos != len(thrift):
        raise FooterError("trailing bytes after the footer")
    if walker.row_groups != len(layouts):
        raise FooterError(f"{walker.row_groups} row groups, {len(layouts)} layouts")
    return bytes(walker.out)


class _Walker:
    """Reads a compact-protocol value and writes it again, changing only what a field handler asks for."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.out = data, 0, bytearray()
        self.row_groups = 0
        self.shift = 0
        self.layout: Layout | None = None  # the row group's (None: offsets moved by ``shift``)
        self.below: int | None = None  # an offset at or past this is refused (pages before indexes)
        self.collect: list[tuple[int, int]] | None = None  # collecting (offset index, length) instead
        self._index_at: int | None = None  # the current chunk's offset index (old offset)

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

    def _zigzag(self) -> int:
        raw = self._varint(copy=False)
        return (raw >> 1) ^ -(raw & 1)

    def _write_zigzag(self, value: int) -> None:
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
    def row_group_fields(self, layouts: list[Layout] | None) -> Callable[[], None]:
        """Each row group relocated by its layout (None: collecting, nothing moved)."""
        def row_group() -> None:
            if layouts is not None:
                if self.row_groups >= len(layouts):
                    raise FooterError("more row groups than layouts")
                self.layout = layouts[self.row_groups]
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
        if field == _CHUNK_OFFSET_INDEX:
            return self._offset_index
        if field == _CHUNK_OFFSET_INDEX_LENGTH:
            return self._offset_index_length
        if field in (_CHUNK_FILE_OFFSET, _CHUNK_COLUMN_INDEX):
            return self._offset
        if field == _CHUNK_META:
            return lambda kind: self.struct(lambda inner: self._offset if inner in _META_OFFSETS else None)
        return None

    def _offset(self, kind: int) -> None:
        if kind != _I64:
            raise FooterError("an offset that is not an i64")
        value = self._zigzag()
        if self.below is not None and not 0 <= value < self.below:
            raise FooterError(f"a page offset {value} outside the pages")
        if self.collect is not None:
            moved = value
        elif self.layout is not None:
            moved = self.layout.relocate(value)
        else:
            moved = value + self.shift
        self._write_zigzag(moved)

    def _offset_index(self, kind: int) -> None:
        start = self.pos
        self._index_at = None
        self._offset(kind)
        self._index_at = _Walker(self.data[start:self.pos])._zigzag()

    def _offset_index_length(self, kind: int) -> None:
        if kind != _I32 or self._index_at is None:
            raise FooterError("an offset index length without its offset before it")
        length = self._zigzag()
        if self.collect is not None:
            self.collect.append((self._index_at, length))
        elif self.layout is not None and self.layout.lengths:
            length = self.layout.lengths[self._index_at]
        self._write_zigzag(length)
        self._index_at = None
