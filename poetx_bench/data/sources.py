"""Readers for `--data PATH`: text formats stream pieces of text, `.bin` token files are memory-mapped.

Formats (chosen by extension, case-insensitive):

    .txt  .txt.gz                       UTF-8 text (a leading BOM is dropped)
    .jsonl .json .jsonl.gz .json.gz     one JSON object per line with a string "text" field (the C4
                                        layout); a .json file that starts with "[" is read as one array
                                        of such objects (loaded whole, so keep big corpora as JSON lines)
    .parquet                            a string column "text" (needs pyarrow), read in row batches
    .bin  (.u16.bin / .u32.bin)         pre-tokenised ids, uint16 unless the name says .u32.bin or a
                                        sidecar <file>.json says {"dtype": "uint32"}

Text readers never hold more than about a megabyte (or one record) at a time. Records are followed by a
blank line, the same document separator as the default corpus. Every problem is a DataError whose one-line
message names the file and says where (byte offset, line, record or row).
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DataError, one_line

DOC_SEPARATOR = "\n\n"
READ_BLOCK = 1 << 20  # bytes read from disk at a time
PIECE_CHARS = 1 << 14  # text handed to the tokeniser per item: small pieces parallelise well

_TEXT_EXTS = {
    ".txt": ("txt", False), ".txt.gz": ("txt", True),
    ".jsonl": ("jsonl", False), ".json": ("jsonl", False),
    ".jsonl.gz": ("jsonl", True), ".json.gz": ("jsonl", True),
    ".parquet": ("parquet", False),
    ".bin": ("bin", False),
}
KNOWN_EXTENSIONS = tuple(sorted(_TEXT_EXTS))
_BIN_DTYPES = {"uint16": np.uint16, "u16": np.uint16, "uint32": np.uint32, "u32": np.uint32}


def detect_format(path: Path) -> tuple[str, bool]:
    """(format, gzipped) from the file name; unknown extensions are a DataError naming the file."""
    name = path.name.lower()
    for ext in sorted(_TEXT_EXTS, key=len, reverse=True):
        if name.endswith(ext):
            return _TEXT_EXTS[ext]
    suffix = "".join(path.suffixes[-2:]) or "(none)"
    raise DataError(f"{path}: unknown data file extension {suffix!r}; expected one of "
                    f"{', '.join(KNOWN_EXTENSIONS)}")


def check_file(path: Path) -> None:
    """Existence, kind and non-emptiness, checked before any reader opens the file."""
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass one data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def _open_binary(path: Path, gz: bool):
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _bad_utf8(path: Path, gz: bool, offset: int, err: UnicodeDecodeError) -> DataError:
    where = "decompressed byte offset" if gz else "byte offset"
    bad = err.object[err.start:err.start + 1].hex() if isinstance(err.object, bytes) else "?"
    return DataError(f"{path}: not valid UTF-8 at {where} {offset} (byte 0x{bad}); re-encode the file as UTF-8")


def _split_pieces(text: str) -> Iterator[str]:
    """Cut text into ~PIECE_CHARS pieces at newlines (or anywhere in a very long line)."""
    start, n = 0, len(text)
    while start < n:
        end = min(start + PIECE_CHARS, n)
        if end < n:
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut >= start else end
        yield text[start:end]
        start = end


def iter_txt(path: Path, gz: bool) -> Iterator[str]:
    """Stream a UTF-8 text file in pieces; a bad byte raises DataError with its offset."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0  # bytes consumed by the decoder so far
    first = True
    pending = b""
    try:
        with _open_binary(path, gz) as f:
            while True:
                block = f.read(READ_BLOCK)
                final = not block
                data = pending + block
                # keep a trailing partial line for the next block, so pieces end at newlines when possible
                cut = len(data) if final else data.rfind(b"\n") + 1
                if cut == 0:
                    cut = len(data)  # one huge line: the incremental decoder copes with split characters
                chunk, pending = data[:cut], data[cut:]
                # the decoder may hold back up to 3 bytes of a character split by the previous chunk;
                # the error's offset is relative to those held bytes + this chunk
                held = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk, final=final)
                except UnicodeDecodeError as e:
                    raise _bad_utf8(path, gz, offset - held + e.start, e) from None
                offset += len(chunk)
                if first:
                    text = text.removeprefix("\ufeff")
                    first = False
                yield from _split_pieces(text)
                if final:
                    return
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from e


def _record_text(path: Path, obj: object, where: str) -> str:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where}: expected a JSON object with a \"text\" field, "
                        f"got {type(obj).__name__}")
    if "text" not in obj:
        keys = ", ".join(list(obj)[:8]) or "none"
        raise DataError(f"{path}: {where}: no \"text\" field (keys: {keys})")
    text = obj["text"]
    if not isinstance(text, str):
        raise DataError(f"{path}: {where}: \"text\" is {type(text).__name__}, expected a string")
    return text


def _first_nonspace_byte(path: Path, gz: bool) -> bytes:
    with _open_binary(path, gz) as f:
        while block := f.read(4096):
            stripped = block.lstrip()
            if stripped:
                return stripped[:1]
    return b""


def iter_jsonl(path: Path, gz: bool) -> Iterator[str]:
    """Stream the "text" of each record (JSON lines, or a JSON array in a .json file)."""
    n_records = 0
    try:
        head = _first_nonspace_byte(path, gz)
        if head == b"[":
            with _open_binary(path, gz) as f:
                raw = f.read()
            try:
                records = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError as e:
                raise _bad_utf8(path, gz, e.start, e) from None
            except ValueError as e:
                raise DataError(f"{path}: invalid JSON ({one_line(e)})") from None
            for i, obj in enumerate(records, 1):
                n_records += 1
                yield _record_text(path, obj, f"record {i}") + DOC_SEPARATOR
        else:
            offset = 0
            with _open_binary(path, gz) as f:
                for lineno, raw in enumerate(f, 1):
                    line_start, offset = offset, offset + len(raw)
                    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                        raw, line_start = raw[3:], line_start + 3
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise _bad_utf8(path, gz, line_start + e.start, e) from None
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        raise DataError(f"{path}: line {lineno}: invalid JSON ({one_line(e)}); "
                                        f"expected one JSON object per line") from None
                    n_records += 1
                    yield _record_text(path, obj, f"line {lineno}") + DOC_SEPARATOR
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from e
    if n_records == 0:
        raise DataError(f"{path}: no records (expected JSON objects with a \"text\" field)")


def iter_parquet(path: Path) -> Iterator[str]:
    """Stream the "text" column in row batches (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        pf = pq.ParquetFile(str(path))
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError
        raise DataError(f"{path}: not a readable parquet file ({one_line(e)[:200]})") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        raise DataError(f"{path}: no \"text\" column (columns: {', '.join(names[:8]) or 'none'})")
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=["text"]):
        for value in batch.column(0).to_pylist():
            row += 1
            if not isinstance(value, str):
                kind = "null" if value is None else type(value).__name__
                raise DataError(f"{path}: row {row}: \"text\" is {kind}, expected a string")
            yield value + DOC_SEPARATOR
    if row == 0:
        raise DataError(f"{path}: no rows")


def iter_text(path: Path, fmt: str, gz: bool) -> Iterator[str]:
    if fmt == "txt":
        return iter_txt(path, gz)
    if fmt == "jsonl":
        return iter_jsonl(path, gz)
    if fmt == "parquet":
        return iter_parquet(path)
    raise AssertionError(fmt)


def bin_dtype(path: Path) -> np.dtype:
    """uint16/uint32 from a `.u16.bin`/`.u32.bin` name or a `<file>.json` sidecar; uint16 by default."""
    from_name = None
    parts = path.name.lower().split(".")
    if len(parts) >= 3 and parts[-2] in _BIN_DTYPES:
        from_name = np.dtype(_BIN_DTYPES[parts[-2]])
    sidecar = path.with_name(path.name + ".json")
    from_sidecar = None
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{sidecar}: invalid JSON sidecar ({one_line(e)})") from None
        value = meta.get("dtype") if isinstance(meta, dict) else None
        if value not in _BIN_DTYPES:
            raise DataError(f"{sidecar}: \"dtype\" is {value!r}; expected \"uint16\" or \"uint32\"")
        from_sidecar = np.dtype(_BIN_DTYPES[value])
    if from_name is not None and from_sidecar is not None and from_name != from_sidecar:
        raise DataError(f"{path}: file name says {from_name} but {sidecar.name} says {from_sidecar}")
    return from_sidecar or from_name or np.dtype(np.uint16)


def open_bin(path: Path, vocab_size: int) -> np.memmap:
    """Memory-map a pre-tokenised file and check every id is < vocab_size (scanned in chunks)."""
    dtype = bin_dtype(path)
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(f"{path}: size {size} bytes is not a multiple of {dtype.itemsize} ({dtype}); "
                        f"wrong dtype? (name it .u16.bin/.u32.bin or add {path.name}.json)")
    tokens = np.memmap(path, dtype=dtype, mode="r")
    step = 1 << 24
    for start in range(0, len(tokens), step):
        chunk = tokens[start:start + step]
        top = int(chunk.max())
        if top >= vocab_size:
            pos = start + int(np.argmax(chunk >= vocab_size))
            raise DataError(f"{path}: token id {int(tokens[pos])} at position {pos} is >= vocab_size "
                            f"{vocab_size}; pass a larger --vocab-size or check the dtype ({dtype})")
    return tokens
