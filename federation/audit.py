"""The node's append-only audit log (JSON lines): every release decision and its reasons.

The audit log stays on the node. It may name rules and thresholds; it never holds sample
IDs or per-sample values.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def append_event(log_path: Path, event: str, **fields: Any) -> None:
    record = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    # One write of a whole line with O_APPEND: concurrent steps never interleave records.
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
