from ._config import mask_secret, redact_url, scrub

__all__ = ["mask_secret", "redact_url", "scrub"]
