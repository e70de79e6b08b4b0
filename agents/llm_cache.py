"""On-disk cache of LLM answers, so a re-run sends no request and costs nothing.

The key is the sha256 of the canonical request: endpoint URL, model, messages and the
parameters that change the answer (temperature, max_tokens, response_format), as JSON
with sorted keys. The API key is never part of the request passed here, so a changed or
rotated key still hits the cache and no key is ever written to disk. Each entry holds the
raw response body and its token usage, in `<root>/<key[:2]>/<key>.json`, written to a
temporary file and renamed into place (a crash never leaves a half-written entry; two
writers of one key both write the same answer).

Only answers the endpoint actually gave (HTTP 200) are stored; errors and timeouts are
not, so a re-run retries them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def request_key(request: dict[str, Any]) -> str:
    """sha256 (hex) of the request as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    body: str  # the raw HTTP response body
    usage: dict[str, int]  # prompt_tokens, completion_tokens as the endpoint reported them
    latency_s: float  # how long the original request took
    created_at: str


class LLMCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer, or None (absent or unreadable entries count as misses)."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
            return CachedAnswer(body=entry["body"], usage=dict(entry.get("usage") or {}),
                                latency_s=float(entry.get("latency_s", 0.0)), created_at=entry.get("created_at", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, body: str, usage: dict[str, int], latency_s: float = 0.0) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "body": body, "usage": usage, "latency_s": round(latency_s, 4),
                 "created_at": datetime.now(timezone.utc).isoformat()}
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(entry, out)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
