"""What one notification says, in the forms its targets read: plain text and HTML for e-mail, JSON for
webhooks. Built once per digest and handed to every target, so all of them say the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Notice:
    event_type: str  # "alerts.digest" or "notification.test"
    subject: str
    text: str
    html: str
    payload: dict[str, Any] = field(default_factory=dict)  # the webhook body, without its event id


class DeliveryFailed(Exception):
    """A target did not get a notice; `reason` says why in words staff can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
