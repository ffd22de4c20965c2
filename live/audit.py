"""The audit trail: every action the adapter takes, one JSON object per line, secrets removed.

Lines go through a `grinder.live.journal.Journal`: each is handed to the OS before `write` returns, so the
trail of a process killed with SIGKILL ends at its last complete action; the fsync follows on a
background thread (the adapter never waits for the disk between a decision and its order).

What is masked as "***", at any depth (the event name and time aside, which are the code's own):
every value under a key that names a credential (api key, secret, signature, listen key, password,
token); inside text, the value after such a name (`signature=...`, `"X-MBX-APIKEY": '...'`, also
percent-encoded) and every 64-hex-digit token (an HMAC-SHA256 signature, whatever key made it);
and a registered secret where it stands as a whole token (delimited by the start or end of the
text, whitespace or URL / JSON punctuation). Whole tokens only: a short secret ("s") does not eat
into words ("start"). A secret of SECRET_ANYWHERE_LEN characters or more is masked also inside a
longer token, and the whole token goes. One exception to the 64-hex rule: a field the adapter names
as a content hash (`DIGEST_KEYS`: a model's booster hash, its feature set's version) whose whole
value is one 64-hex digest is written as it is (registered secrets are still masked in it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from grinder.live.journal import Journal

REDACTED = "***"
_PLAIN = (str, int, float, bool, type(None))  # values json writes as they are
_KEEP = ("ts_ns", "event")  # the line's own fields: never data, never masked
_SECRET_KEYS = re.compile(r"(api[-_]?key|secret|signature|listen[-_]?key|password|passphrase|token)", re.I)
# What ends a token: whitespace, the punctuation of URLs, headers, JSON and Python reprs, and a
# percent escape (a URL quoted once more: "https%3A%2F%2F..." holds the token "https").
_DELIMS = r"\s&=?/:,;\"'()\[\]{}<>|#%"
# A credential's name, what may close its quotes and separate it from its value (=, :, also as %3D /
# %3A, %22 quotes), then the value up to the next delimiter.
_SECRET_PARAMS = re.compile(
    r"((?:signature|listen[-_]?key|api[-_]?key|x-mbx-apikey|secret|password|passphrase|token)"
    r"(?:[\"']|%22|%27)?\s*(?:=|:|%3D|%3A)\s*(?:[\"']|%22|%27)?)"
    rf"((?:[^{_DELIMS}%]|%(?!2[2367]|3D|3A))+)",
    re.I,
)
_HEX64 = re.compile(rf"(?<![^{_DELIMS}])[0-9a-fA-F]{{64}}(?![^{_DELIMS}])")
# Fields holding a SHA-256 content hash the adapter writes itself (live.model's `model` line): kept when whole.
DIGEST_KEYS = frozenset({"sha256", "model_sha256", "feature_set_version"})
_WHOLE_HEX64 = re.compile(r"[0-9a-f]{64}")
SECRET_ANYWHERE_LEN = 12  # a secret this long does not occur by chance inside another word
# One encoder for every line: json.dumps with options builds a new one per call (decision 012).
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
        secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first
        self._secrets = tuple(secrets)
        # Each secret where it stands as a whole token; a long one also inside a token, the token whole.
        alts = [rf"(?<![^{_DELIMS}]){re.escape(x)}(?![^{_DELIMS}])" for x in secrets]
        alts += [rf"[^{_DELIMS}]*{re.escape(x)}[^{_DELIMS}]*" for x in secrets if len(x) >= SECRET_ANYWHERE_LEN]
        self._secret_re = re.compile("|".join(alts)) if alts else None
        # Lines written per event name since open: what the metrics count (live.metrics reads it at scrape time).
        self.events: dict[str, int] = {}

    def redact(self, value: Any, key: str = "") -> Any:
        """`value` with every credential and secret replaced by REDACTED (dicts and lists walked)."""
        if key and _secret_key(key):
            return REDACTED
        if isinstance(value, dict):
            return {k: self.redact(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        if isinstance(value, str):
            # Credentials by their names first: a secret masked before would hide the name ("***ignature=").
            low = value.lower()  # every name _SECRET_PARAMS knows holds one of these: most text skips it
            if "sig" in low or "key" in low or "secret" in low or "pass" in low or "token" in low:
                value = _SECRET_PARAMS.sub(lambda m: m.group(1) + REDACTED, value)
            if len(value) >= 64 and not (key in DIGEST_KEYS and _WHOLE_HEX64.fullmatch(value)):
                value = _HEX64.sub(REDACTED, value)
            if self._secret_re is not None and any(x in value for x in self._secrets):
                value = self._secret_re.sub(REDACTED, value)
        return value

    def render(self, now_ns: int, event: str, **fields: Any) -> str:
        """The line `write` appends for these arguments: {"ts_ns", "event", **fields}, secrets redacted."""
        record = {"ts_ns": int(now_ns), "event": event, **fields}
        if not all(type(v) in _PLAIN for v in fields.values()):
            # Objects become text first (exceptions, bytes, paths), so their text is redacted too.
            record = json.loads(json.dumps(record, default=str))
        clean = {k: (v if k in _KEEP else self.redact(v, k)) for k, v in record.items()}
        return _ENCODER.encode(clean)

    def write(self, now_ns: int, event: str, **fields: Any) -> None:
        """Append one line {"ts_ns", "event", **fields} (in the OS at once, on disk a moment later)."""
        self._journal.append(self.render(now_ns, event, **fields))
        self.events[event] = self.events.get(event, 0) + 1  # a dict update (~50 ns): no metrics call here

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
