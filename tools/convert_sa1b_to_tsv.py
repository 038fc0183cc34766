"""Convert the SA-1B download layout (``sa_N.jpg`` + ``sa_N.json``) into TSV shards.

    python tools/convert_sa1b_to_tsv.py --input DIR --output DIR --num-shards N

Each shard ``sa1b-KKKKK.tsv`` holds rows ``<file name>\\t<json>\\t<base64 jpeg>`` (the JSON
re-serialized on one line, the JPEG bytes unchanged) with a ``sa1b-KKKKK.lineidx`` of row byte
offsets; see DATASET.md. Inputs are naturally sorted by path and cut into N contiguous chunks,
so shard K always receives the same inputs.

* Checks each input first and skips, with the reason, a missing json or jpg, an unreadable
  jpg, unparsable JSON, no masks, a size mismatch (JSON image size or an RLE size differs
  from the JPEG's), or a bad RLE (a malformed counts string, a negative run, or runs that do
  not cover the image's H x W pixels, which pycocotools would decode into uninitialized
  memory).
* Refuses (exit status 2) an input folder without any ``sa_N.jpg`` + ``sa_N.json`` pair, and
  fewer pairs than shards (a shard without rows is refused by the training loader).
* Verifies what it wrote: every row is read back through the ``.lineidx`` and compared
  (CRC32 of the row, field count, file name) with what was written; row offsets must tile
  the file exactly.
* Resumable: a shard is written to ``.partial`` files renamed into place when complete, then
  a ``sa1b-KKKKK.done.json`` marker records its inputs, rows and checksums. A re-run skips
  shards whose marker matches the current inputs and which verify, and redoes the others
  (partial, corrupted, or planned from different inputs).
* Reports skipped inputs and why, on stdout and in ``OUTPUT/conversion_report.json``.

Several processes may convert disjoint shards of one output folder (``--only-shards 0-9``).
Also importable: :func:`convert_sa1b_to_tsv`, :func:`verify_shard`.
"""

from __future__ import annotations

import argparse
import base64
import glob
import io
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from PIL import Image

from semantic_sam.data.sa1b import (
    CorruptRecordError,
    CorruptRLEError,
    find_sa1b_pairs,
    natural_sort_key,
    parse_annotation_json,
    validate_annotations,
)
from semantic_sam.data.tsv import TSVFile, TSVWriter, lineidx_path_for
from semantic_sam.errors import UserError
from semantic_sam.utils.cli import report_user_error

__all__ = ["ConversionError", "ConversionReport", "convert_sa1b_to_tsv", "main", "shard_paths", "verify_shard"]

logger = logging.getLogger(__name__)

MARKER_VERSION = 1
SHARD_PREFIX = "sa1b-"
REPORT_NAME = "conversion_report.json"


class ConversionError(RuntimeError, UserError):
    """The conversion cannot proceed (bad arguments, stale output, or a write that does not verify)."""


@dataclass
class ConversionReport:
    """What a conversion run did."""

    num_shards: int
    written: list[str] = field(default_factory=list)  # shards (re)written by this run
    complete: list[str] = field(default_factory=list)  # shards found complete and verified
    rewritten_after_verification: list[tuple[str, str]] = field(default_factory=list)  # (shard, problem)
    rows: int = 0  # rows in the shards this run handled
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input path, reason)
    empty: list[str] = field(default_factory=list)  # shards without rows: every input was skipped

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.skipped))

    def summary(self, max_listed: int = 20) -> str:
        lines = [
            f"{self.num_shards} shards: {len(self.written)} written, {len(self.complete)} already complete "
            f"(verified), {len(self.rewritten_after_verification)} redone after failed verification; "
            f"{self.rows} rows in the shards handled",
        ]
        for shard, problem in self.rewritten_after_verification:
            lines.append(f"  redone {os.path.basename(shard)}: {problem}")
        if self.empty:
            names = ", ".join(os.path.basename(p) for p in self.empty)
            lines.append(
                f"WARNING: {len(self.empty)} shard(s) have no rows, every input was skipped ({names}); "
                "the training loader refuses empty shards: fix the inputs and re-run, or delete them"
            )
        if self.skipped:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.skip_counts().items()))
            lines.append(f"skipped {len(self.skipped)} inputs ({counts}):")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:max_listed]]
            if len(self.skipped) > max_listed:
                lines.append(f"  ... and {len(self.skipped) - max_listed} more (see {REPORT_NAME})")
        else:
            lines.append("skipped 0 inputs")
        return "\n".join(lines)


def shard_paths(output_dir: str, num_shards: int) -> list[str]:
    """``OUTPUT/sa1b-00000.tsv`` ... (zero-padded so name order is shard order)."""
    width = max(5, len(str(num_shards - 1)))
    return [os.path.join(output_dir, f"{SHARD_PREFIX}{k:0{width}d}.tsv") for k in range(num_shards)]


def _marker_path(tsv_path: str) -> str:
    return os.path.splitext(tsv_path)[0] + ".done.json"


def _chunks(items: Sequence, n: int) -> list[list]:
    return [list(items[len(items) * k // n : len(items) * (k + 1) // n]) for k in range(n)]


def _parse_shard_spec(spec: str, num_shards: int) -> list[int]:
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConversionError(f"--only-shards: cannot parse {part!r} (use e.g. 0,3,5-9)") from None
    bad = sorted(k for k in out if not 0 <= k < num_shards)
    if bad:
        raise ConversionError(f"--only-shards: shard(s) {bad} outside 0..{num_shards - 1}")
    return sorted(out)


# -- inputs -------------------------------------------------------------------------------------
def check_input(image_path: str, json_path: str) -> tuple[list[str] | None, str | None]:
    """Read and check one input pair.

    Returns:
        ``(row, None)`` with the TSV fields ``[file name, json, base64]``, or ``(None, reason)``
        where reason starts with one of: ``bad json``, ``unreadable jpg``, ``no masks``,
        ``size mismatch``, ``bad rle``.
    """
    try:
        with open(json_path, "rb") as f:
            data = parse_annotation_json(f.read(), json_path)
    except OSError as e:
        return None, f"bad json: cannot read ({e})"
    except CorruptRecordError as e:
        return None, f"bad json: {e.reason}"
    try:
        with open(image_path, "rb") as f:
            jpeg = f.read()
        with Image.open(io.BytesIO(jpeg)) as img:
            w, h = img.size
            # Decoding at reduced scale still reads the whole entropy-coded stream (truncation,
            # corruption) at a fraction of the cost of a full decode.
            img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            img.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
        return None, f"unreadable jpg: {type(e).__name__}: {e}"
    try:
        validate_annotations(data, (h, w), image_path)
    except CorruptRLEError as e:
        return None, f"bad rle: {e.reason}"
    except CorruptRecordError as e:
        kind = "no masks" if "no masks" in e.reason else "size mismatch"
        return None, f"{kind}: {e.reason}"
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    return [os.path.basename(image_path), text, base64.b64encode(jpeg).decode("ascii")], None


# -- verification -------------------------------------------------------------------------------
def _row_crc(line: bytes) -> int:
    return zlib.crc32(line) & 0xFFFFFFFF


def verify_shard(tsv_path: str, names: Sequence[str] | None = None, crcs: Sequence[int] | None = None) -> list[str]:
    """Re-read every row of a shard through its ``.lineidx``.

    Args:
        tsv_path: the shard.
        names: expected file name of each row (checks the row count too).
        crcs: expected CRC32 of each row's bytes (without the newline).

    Returns:
        Problems found (empty when the shard is good); each names the shard and row.
    """
    base = os.path.basename(tsv_path)
    idx_path = lineidx_path_for(tsv_path)
    for p in (tsv_path, idx_path):
        if not os.path.isfile(p):
            return [f"{os.path.basename(p)} is missing"]
    tsv = TSVFile(tsv_path, idx_path)
    try:
        offsets = tsv.offsets
    except ValueError as e:  # TSVFormatError: unreadable or inconsistent .lineidx
        return [str(e)]
    problems: list[str] = []
    expected_rows = len(names) if names is not None else len(offsets)
    if len(offsets) != expected_rows:
        return [f"{base}: .lineidx has {len(offsets)} rows, expected {expected_rows}"]
    size = os.path.getsize(tsv_path)
    pos = 0
    try:
        for i in range(len(offsets)):
            if int(offsets[i]) != pos:
                problems.append(f"{base} row {i}: offset {int(offsets[i])} in .lineidx, expected {pos}")
                break
            if pos >= size:
                problems.append(f"{base} row {i}: offset {pos} is past the end ({size} bytes)")
                break
            line = tsv.read_line(i)
            pos += len(line) + 1
            fields = line.split(b"\t")
            if len(fields) != 3:
                problems.append(f"{base} row {i}: {len(fields)} fields, expected 3")
            elif names is not None and fields[0].decode("utf-8", "replace") != names[i]:
                problems.append(f"{base} row {i}: file name {fields[0][:60]!r}, expected {names[i]!r}")
            if crcs is not None and _row_crc(line) != int(crcs[i]):
                problems.append(f"{base} row {i}: checksum differs from what was written")
            if len(problems) >= 10:
                break
        if not problems and pos != size:
            problems.append(f"{base}: rows end at byte {pos} but the file has {size} bytes")
    except (ValueError, OSError) as e:
        problems.append(f"{base}: {e}")
    finally:
        tsv.close()
    return problems


def _load_marker(tsv_path: str) -> dict | None:
    try:
        with open(_marker_path(tsv_path), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == MARKER_VERSION else None


def _write_json_atomic(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _remove(paths: Iterable[str]) -> None:
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


def _shard_files(tsv_path: str) -> list[str]:
    idx = lineidx_path_for(tsv_path)
    return [tsv_path, idx, _marker_path(tsv_path), tsv_path + TSVWriter.PARTIAL_SUFFIX, idx + TSVWriter.PARTIAL_SUFFIX]


# -- conversion ---------------------------------------------------------------------------------
def _write_shard(
    tsv_path: str, inputs: Sequence[tuple[str, str]], input_names: list[str], num_shards: int, bar
) -> dict:
    _remove(_shard_files(tsv_path))
    names: list[str] = []
    crcs: list[int] = []
    skipped: list[tuple[str, str]] = []
    with TSVWriter(tsv_path, atomic=True) as writer:
        for image_path, json_path in inputs:
            row, reason = check_input(image_path, json_path)
            if row is None:
                skipped.append((image_path, reason))
            else:
                writer.write(row)
                names.append(row[0])
                crcs.append(_row_crc("\t".join(row).encode("utf-8")))
            bar.update(1)
    problems = verify_shard(tsv_path, names, crcs)
    if problems:
        raise ConversionError(f"{tsv_path} does not verify right after writing: " + "; ".join(problems))
    marker = {
        "version": MARKER_VERSION,
        "num_shards": num_shards,
        "inputs": input_names,
        "rows": names,
        "crc32": crcs,
        "skipped": skipped,
    }
    _write_json_atomic(_marker_path(tsv_path), marker)
    return marker


def convert_sa1b_to_tsv(
    input_dir: str,
    output_dir: str,
    num_shards: int,
    *,
    recursive: bool = False,
    only_shards: Sequence[int] | None = None,
    clean: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert ``input_dir`` (SA-1B layout) into ``num_shards`` TSV shards in ``output_dir``.

    Args:
        input_dir: folder of ``sa_N.jpg`` + ``sa_N.json``.
        output_dir: folder for the shards (created).
        num_shards: number of shards; inputs are cut into this many contiguous chunks.
        recursive: also take inputs from sub-folders of ``input_dir``.
        only_shards: process only these shard indices (others are left alone).
        clean: delete existing shards in ``output_dir`` first.
        progress: show a tqdm progress bar (images).

    Returns:
        A :class:`ConversionReport`; also written to ``OUTPUT/conversion_report.json``.

    Raises:
        ConversionError: bad arguments, no input pair in ``input_dir`` or fewer pairs than
            shards, shards of another conversion in ``output_dir``, or a shard that does not
            verify right after being written.
        FileNotFoundError: ``input_dir`` does not exist.
    """
    from tqdm import tqdm

    if num_shards < 1:
        raise ConversionError(f"--num-shards must be >= 1, got {num_shards}")
    if os.path.abspath(input_dir) == os.path.abspath(output_dir):
        raise ConversionError("--output must differ from --input")
    pairs, unpaired = find_sa1b_pairs(input_dir, recursive=recursive)
    if not pairs:
        found = f"; {len(unpaired)} unpaired file(s), e.g. {unpaired[0][0]} ({unpaired[0][1]})" if unpaired else ""
        hint = "" if recursive else " (--recursive also reads sub-folders)"
        raise ConversionError(f"no sa_N.jpg + sa_N.json pair in {input_dir}{found}{hint}")
    if len(pairs) < num_shards:
        raise ConversionError(
            f"only {len(pairs)} input pair(s) in {input_dir} for {num_shards} shards: some shards would have no "
            f"rows; use --num-shards {len(pairs)} or fewer"
        )
    os.makedirs(output_dir, exist_ok=True)
    planned = shard_paths(output_dir, num_shards)
    existing = glob.glob(os.path.join(output_dir, "*.tsv"))
    if clean:
        for p in existing:
            _remove(_shard_files(p))
    else:
        stale = sorted(set(map(os.path.abspath, existing)) - set(map(os.path.abspath, planned)))
        if stale:
            raise ConversionError(
                f"{output_dir} holds shards that are not part of a {num_shards}-shard conversion "
                f"({', '.join(os.path.basename(p) for p in stale[:5])}{' ...' if len(stale) > 5 else ''}); "
                "use another --output folder or --clean"
            )
    chunks = _chunks(pairs, num_shards)
    todo = list(range(num_shards)) if only_shards is None else list(only_shards)
    report = ConversionReport(num_shards=num_shards, skipped=[(p, r) for p, r in unpaired])
    rel = lambda p: os.path.relpath(p, input_dir)  # noqa: E731

    # Pass 1: find the shards that are already complete.
    to_write: list[int] = []
    for k in todo:
        tsv_path = planned[k]
        names = [rel(img) for img, _ in chunks[k]]
        marker = _load_marker(tsv_path)
        if marker is not None and marker.get("inputs") == names and marker.get("num_shards") == num_shards:
            problems = verify_shard(tsv_path, marker["rows"], marker["crc32"])
            if not problems:
                report.complete.append(tsv_path)
                report.rows += len(marker["rows"])
                if not marker["rows"]:
                    report.empty.append(tsv_path)
                report.skipped += [tuple(s) for s in marker["skipped"]]
                continue
            report.rewritten_after_verification.append((tsv_path, "; ".join(problems[:3])))
            logger.warning("%s failed verification (%s); rewriting it", tsv_path, problems[0])
        to_write.append(k)

    # Pass 2: write the others.
    total = sum(len(chunks[k]) for k in to_write)
    with tqdm(total=total, unit="img", disable=not progress, desc="SA-1B -> TSV") as bar:
        for k in to_write:
            bar.set_postfix_str(os.path.basename(planned[k]))
            marker = _write_shard(planned[k], chunks[k], [rel(img) for img, _ in chunks[k]], num_shards, bar)
            report.written.append(planned[k])
            report.rows += len(marker["rows"])
            if not marker["rows"]:
                report.empty.append(planned[k])
            report.skipped += [tuple(s) for s in marker["skipped"]]

    report.skipped.sort(key=lambda s: natural_sort_key(s[0]))
    _write_json_atomic(
        os.path.join(output_dir, REPORT_NAME),
        {
            "num_shards": num_shards,
            "written": [os.path.basename(p) for p in report.written],
            "complete": [os.path.basename(p) for p in report.complete],
            "rewritten_after_verification": report.rewritten_after_verification,
            "rows": report.rows,
            "empty_shards": [os.path.basename(p) for p in report.empty],
            "skip_counts": report.skip_counts(),
            "skipped": report.skipped,
        },
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert SA-1B (sa_N.jpg + sa_N.json) into TSV shards with .lineidx files.",
        epilog="Re-running the same command resumes: complete, verified shards are skipped.",
    )
    parser.add_argument("--input", required=True, metavar="DIR", help="folder of sa_N.jpg + sa_N.json")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the .tsv/.lineidx shards")
    parser.add_argument("--num-shards", type=int, required=True, metavar="N")
    parser.add_argument("--recursive", action="store_true", help="also read inputs in sub-folders of --input")
    parser.add_argument("--only-shards", metavar="LIST", help="process only these shards, e.g. 0,3,5-9")
    parser.add_argument("--clean", action="store_true", help="delete existing shards in --output first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        only = _parse_shard_spec(args.only_shards, args.num_shards) if args.only_shards else None
        report = convert_sa1b_to_tsv(
            args.input,
            args.output,
            args.num_shards,
            recursive=args.recursive,
            only_shards=only,
            clean=args.clean,
            progress=not args.no_progress,
        )
    except Exception as e:
        return report_user_error(e)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
