"""HTTP Range responses for media files (RFC 9110 section 14).

Browsers seek in <video>/<audio> by asking for byte ranges; a server that ignores them
makes seeking re-download the file. One range per request (what media elements send);
a range that cannot be satisfied gets 416 with `Content-Range: bytes */<size>`.
The path handed in here always comes from the store, never from the request.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterator
from pathlib import Path

from starlette.responses import Response, StreamingResponse

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

# Types browsers expect for the containers merforge ingests; mimetypes misses some.
_AUDIO_TYPES = {".flac": "audio/flac", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
                ".aac": "audio/aac", ".ogg": "audio/ogg", ".opus": "audio/ogg", ".wma": "audio/x-ms-wma",
                ".mp4": "audio/mp4", ".webm": "audio/webm", ".mkv": "audio/x-matroska"}
_VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".ts": "video/mp2t",
                ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".flv": "video/x-flv", ".wmv": "video/x-ms-wmv"}


class RangeNotSatisfiable(ValueError):
    pass


def media_type(path: Path, audio_only: bool) -> str:
    """MIME type for a source file; audio-only sources are typed as audio even in video containers."""
    suffix = path.suffix.lower()
    table = _AUDIO_TYPES if audio_only else _VIDEO_TYPES
    if suffix in table:
        return table[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int]:
    """(first, last) byte positions, inclusive, for a single `bytes=` range.

    Raises RangeNotSatisfiable for malformed headers, several ranges, or a range that
    starts past the end of the file.
    """
    match = _RANGE.match(header)
    if not match:
        raise RangeNotSatisfiable(f"unsupported Range header {header!r}")
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        raise RangeNotSatisfiable("empty range")
    if not first_text:  # suffix range: the last N bytes
        length = int(last_text)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range")
        return max(0, size - length), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"range {first}-{last} outside 0-{size - 1}")
    return first, min(last, size - 1)


def _read(path: Path, first: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(first)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK_BYTES, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


def range_response(path: Path, range_header: str | None, content_type: str) -> Response:
    """200 with the whole file, 206 with the requested range, or 416 when it cannot be served."""
    size = os.stat(path).st_size
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if not range_header:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_read(path, 0, size), status_code=200, media_type=content_type, headers=headers)
    try:
        first, last = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
    length = last - first + 1
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    return StreamingResponse(_read(path, first, length), status_code=206, media_type=content_type, headers=headers)
