"""A rate limit shared by every process that calls one provider: a token bucket for requests per minute
and tokens per minute per (base_url, model), kept in ``genepool.llm_rate_buckets``.

Each charge is one atomic ``UPDATE ... RETURNING`` on the bucket's row: it refills the bucket for the
time since the last charge (PostgreSQL's clock, so every machine agrees), takes what the request needs
if enough is there, and reports whether it did. A refused caller sleeps for the computed deficit and
tries again. The LLM client charges only on cache misses: an estimate of the tokens before the call,
the difference to the real usage after it (a bucket may go below zero: the next callers wait longer).
Bucket capacity is ``burst_s`` seconds of the limit (default 60 s, i.e. one minute's allowance).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from genepool.llm import LLMError

log = logging.getLogger(__name__)


class RateLimitError(LLMError):
    """The rate limit cannot grant a request (it needs more than the bucket holds, or waited too long)."""


def _refill(col: str, cap: str, rate: str) -> str:
    elapsed = "GREATEST(0, EXTRACT(EPOCH FROM (statement_timestamp() - b.updated_at))::float8)"
    return f"LEAST({cap}::float8, b.{col} + {elapsed} * {rate}::float8)"


_REQ = _refill("req_level", "%(rcap)s", "%(rrate)s")
_TOK = _refill("tok_level", "%(tcap)s", "%(trate)s")
_OK = f"({_REQ} >= %(nr)s::float8 AND {_TOK} >= %(nt)s::float8)"

_CHARGE_SQL = f"""
UPDATE genepool.llm_rate_buckets AS b SET
    req_level = {_REQ} - CASE WHEN {_OK} THEN %(nr)s::float8 ELSE 0 END,
    tok_level = {_TOK} - CASE WHEN {_OK} THEN %(nt)s::float8 ELSE 0 END,
    requests = b.requests + CASE WHEN {_OK} THEN %(nr)s::bigint ELSE 0 END,
    granted = {_OK},
    updated_at = GREATEST(b.updated_at, statement_timestamp())
WHERE b.bucket = %(bucket)s
RETURNING b.granted, b.req_level, b.tok_level
"""

_ADJUST_SQL = f"""
UPDATE genepool.llm_rate_buckets AS b SET
    tok_level = LEAST(%(tcap)s::float8, {_TOK} - %(nt)s::float8),
    updated_at = GREATEST(b.updated_at, statement_timestamp())
WHERE b.bucket = %(bucket)s
"""


class RateLimiter:
    """``acquire(tokens)`` blocks until one request of ``tokens`` fits both limits; ``adjust(delta)``
    corrects the token charge once the real usage is known. ``None`` limits are off."""

    def __init__(
        self,
        db: Any,
        bucket: str,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        *,
        burst_s: float = 60.0,
        max_wait_s: float = 900.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        for name, v in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer or None (no limit)")
        if not (isinstance(burst_s, (int, float)) and math.isfinite(burst_s) and 0 < burst_s <= 3600):
            raise ValueError(f"burst_s={burst_s!r} must be between 0 and 3600 seconds")
        self.db = db
        self.bucket = bucket
        self.rpm_limit = rpm_limit
        self.tpm_limit = tpm_limit
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self.rcap = max(1.0, rpm_limit * burst_s / 60.0) if rpm_limit else 0.0
        self.tcap = float(tpm_limit) * burst_s / 60.0 if tpm_limit else 0.0
        self.rrate = rpm_limit / 60.0 if rpm_limit else 0.0
        self.trate = tpm_limit / 60.0 if tpm_limit else 0.0
        self._row_ready = False
        self.waited_s = 0.0  # total time this limiter made callers wait

    @property
    def enabled(self) -> bool:
        return self.rpm_limit is not None or self.tpm_limit is not None

    def _params(self, nr: float, nt: float) -> dict:
        return {"bucket": self.bucket, "rcap": self.rcap, "rrate": self.rrate, "tcap": self.tcap,
                "trate": self.trate, "nr": nr, "nt": nt}

    def _ensure_row(self) -> None:
        if not self._row_ready:
            self.db.execute(
                "INSERT INTO genepool.llm_rate_buckets (bucket, req_level, tok_level) VALUES (%s, %s, %s)"
                " ON CONFLICT (bucket) DO NOTHING",
                (self.bucket, self.rcap, self.tcap),
            )
            self._row_ready = True

    def acquire(self, tokens: int = 0) -> float:
        """Take one request and ``tokens`` from the bucket, waiting as needed; returns the seconds waited."""
        if not self.enabled:
            return 0.0
        nr = 1.0 if self.rpm_limit else 0.0
        nt = float(max(0, tokens)) if self.tpm_limit else 0.0
        if self.tpm_limit and nt > self.tcap:
            raise RateLimitError(
                f"a request of about {int(nt)} tokens can never fit tpm_limit={self.tpm_limit} (bucket"
                f" {self.tcap:g}); raise tpm_limit or shorten the request"
            )
        self._ensure_row()
        waited = 0.0
        while True:
            row = self.db.fetchone(_CHARGE_SQL, self._params(nr, nt))
            if row is None:  # the row was deleted under us: recreate it
                self._row_ready = False
                self._ensure_row()
                continue
            if row["granted"]:
                self.waited_s += waited
                return waited
            wait = 0.0
            if nr and self.rrate:
                wait = max(wait, (nr - row["req_level"]) / self.rrate)
            if nt and self.trate:
                wait = max(wait, (nt - row["tok_level"]) / self.trate)
            wait = min(max(wait, 0.01), 5.0)
            if waited + wait > self.max_wait_s:
                raise RateLimitError(
                    f"rate limit {self.bucket}: waited {waited:.0f}s without a free slot (rpm_limit="
                    f"{self.rpm_limit}, tpm_limit={self.tpm_limit}); another process may be using it all"
                )
            log.debug("rate limit %s: waiting %.2fs", self.bucket, wait)
            self._sleep(wait)
            waited += wait

    def adjust(self, tokens_delta: int) -> None:
        """Charge (or refund, if negative) the difference between the real and the estimated tokens."""
        if not self.tpm_limit or tokens_delta == 0:
            return
        self._ensure_row()
        self.db.execute(_ADJUST_SQL, self._params(0.0, float(tokens_delta)))
