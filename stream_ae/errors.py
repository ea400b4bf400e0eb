"""One root exception and a few subclasses that carry where a problem happened.

Every error a user can meet names *what* (field, asset, topic/partition/offset,
file) and *what to do*. The CLI turns any :class:`StreamAEError` into a one-line
message and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class StreamAEError(Exception):
    """Root of every error stream_ae raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class ConfigError(StreamAEError):
    """Invalid settings: the message names the field and the value's problem."""


class BrokerError(StreamAEError):
    """The local broker could not be obtained, started, stopped or reached."""


class KafkaIOError(StreamAEError):
    """A Kafka operation failed (connect, create topics, produce, commit)."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        hint: str = "",
        permanent: bool = False,
    ) -> None:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("topic", topic), ("partition", partition), ("offset", offset))
            if v is not None
        )
        super().__init__(f"{message} [{where}]" if where else message, hint=hint)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        #: retrying cannot help (fatal, not authorised, a record too large); other
        #: errors may pass when the broker is back
        self.permanent = permanent


class ArtifactError(StreamAEError):
    """A model artifact is missing, corrupted, or does not match what is expected."""


class DataError(StreamAEError):
    """Input data (a CSV file, a topic range) cannot be used, e.g. too few windows."""
