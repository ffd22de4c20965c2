"""The audit trail: every action the adapter takes, one JSON object per line, secrets removed.

Lines go through a `live.journal.Journal`: each is handed to the OS before `write` returns, so the
trail of a process killed with SIGKILL ends at its last complete action; the fsync follows on a
background thread (the adapter never waits for the disk between a decision and its order).

Values equal to a registered secret, and every value under a key that names a credential (api
key, secret, signature, listen key, password), are written as "***", at any depth; a secret inside
a longer string (an error message quoting a request) is cut out too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from live.journal import Journal

REDACTED = "***"
_PLAIN = (str, int, float, bool, type(None))  # values json writes as they are
_SECRET_KEYS = re.compile(r"(api[-_]?key|secret|signature|listen[-_]?key|password|passphrase|token)", re.I)
# Credentials inside URLs and messages: signature=..., listenKey=..., X-MBX-APIKEY: ...
_SECRET_PARAMS = re.compile(r"((?:signature|listenKey|apiKey|X-MBX-APIKEY)[=:]\s*)[^&\s,'\"}]+", re.I)
# One encoder for every line: json.dumps with options builds a new one per call (a third of a line's time).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
_KEY_VERDICTS: dict[str, bool] = {}  # key -> names a credential; a line's keys are nearly always the same few


def _secret_key(key: str) -> bool:
    verdict = _KEY_VERDICTS.get(key)
    if verdict is None:
        verdict = _SECRET_KEYS.search(key) is not None
        if len(_KEY_VERDICTS) < 4096:  # keys of venue payloads are open-ended: the memo stays bounded
            _KEY_VERDICTS[key] = verdict
    return verdict


class AuditLog:
    """Append-only JSONL file; `write(event, **fields)` records one action with its time (ns)."""

    def __init__(self, path: Path, secrets: tuple[str, ...] = (), max_delay_s: float | None = 1.0):
        """Open (append to) `path`; `max_delay_s` is the journal's (None: fsynced only on `sync_soon`)."""
        self.path = Path(path)
        self._journal = Journal(self.path, max_delay_s)
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))  # longest first

    def redact(self, value: Any, key: str = "") -> Any:
        """`value` with every secret replaced by REDACTED (dicts and lists walked)."""
        if key and _secret_key(key):
            return REDACTED
        if isinstance(value, dict):
            return {k: self.redact(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        if isinstance(value, str):
            for s in self._secrets:
                value = value.replace(s, REDACTED)
            if "=" in value or ":" in value:  # _SECRET_PARAMS cannot match without one
                value = _SECRET_PARAMS.sub(lambda m: m.group(1) + REDACTED, value)
        return value

    def render(self, now_ns: int, event: str, **fields: Any) -> str:
        """The line `write` appends for these arguments: {"ts_ns", "event", **fields}, secrets redacted."""
        record = {"ts_ns": int(now_ns), "event": event, **fields}
        if not all(type(v) in _PLAIN for v in fields.values()):
            # Objects become text first (exceptions, bytes, paths), so their text is redacted too.
            record = json.loads(json.dumps(record, default=str))
        return _ENCODER.encode(self.redact(record))

    def write(self, now_ns: int, event: str, **fields: Any) -> None:
        """Append one line {"ts_ns", "event", **fields} (in the OS at once, on disk a moment later)."""
        self._journal.append(self.render(now_ns, event, **fields))

    @property
    def error(self) -> OSError | None:
        """Why the trail stopped being written (disk full, I/O error), or None."""
        return self._journal.error

    def prewarm(self) -> None:
        """Warm the write path for the next line without writing one (see Journal.prewarm)."""
        self._journal.prewarm()

    def sync_soon(self) -> None:
        """Have the lines written so far fsynced in the background, now."""
        self._journal.sync_soon()

    def close(self) -> None:
        """Flush to disk and close the file (later writes raise)."""
        self._journal.close()
