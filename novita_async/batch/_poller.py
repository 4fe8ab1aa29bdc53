from .._completion import WEBHOOK_GRACE, WEBHOOK_SLACK, Poller

__all__ = ["WEBHOOK_GRACE", "WEBHOOK_SLACK", "Poller"]
