from .webhooks import (
    MAX_BODY,
    WebhookReceiver,
    WebhookStats,
    parse_event,
)

__all__ = ["MAX_BODY", "WebhookReceiver", "WebhookStats", "parse_event"]
