"""Alerts: failed runs and failed checks, posted as JSON to a webhook, and logged.

The webhook is ``ALERT_WEBHOOK_URL`` (unset: alerts are only logged). A payload says what failed
(asset, partition, run, check) and why, with any URL password masked; it never carries a
connection string or a value of the environment.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import asdict, dataclass

from mysql_pg_assets.core.settings import redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    kind: str  # run_failed | check_failed | schema_change_held | freshness_warn | freshness_fail | freshness_pass
    asset: str
    reason: str
    partition: str | None = None
    run_id: str | None = None
    check: str | None = None
    severity: str = "error"  # error | warn | info


def send(alert: Alert, webhook: str | None = None, timeout_s: float = 10.0) -> bool:
    """Post the alert; returns whether the webhook took it. A webhook that fails is logged, never raised:
    an alert must not fail the run it reports on."""
    alert = Alert(**{**asdict(alert), "reason": redact(alert.reason)[:2000]})
    log.warning("alert: %s", alert)
    url = webhook if webhook is not None else os.environ.get("ALERT_WEBHOOK_URL")
    if not url:
        return False
    request = urllib.request.Request(url, data=json.dumps(asdict(alert)).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the user's own URL)
            return 200 <= response.status < 300
    except OSError as exc:
        log.error("alert webhook failed: %s", redact(str(exc)))
        return False
