"""The fedloom exception tree.

Every error fedloom raises on purpose derives from :class:`FedloomError`, so callers
can catch the whole family in one place, and the sub-classes say which layer refused:

    FedloomError
    ├── ConfigError            bad user configuration (names the field and the fix)
    ├── DataError              a dataset is missing or malformed (says how to get it)
    ├── ValidationError        a model / update does not match what was expected
    │   ├── WeightsMismatchError   missing/extra tensor names, wrong shape or dtype
    │   └── NonFiniteError         NaN or Inf inside a tensor
    ├── SerializationError     bytes that are not a valid fedloom safetensors payload
    │   ├── PayloadTooLargeError   bigger than the configured limit
    │   └── IntegrityError         content hash does not match the header
    ├── RejectedUpdateError    the round engine refused a client update (has a reason code)
    ├── StoreError             the persistent store failed or holds no such record
    │   └── RegistrationRefusedError  an agent registration the store refused (has a reason code)
    └── ClientError            a user Trainer raised or returned something unusable
"""

from __future__ import annotations


class FedloomError(Exception):
    """Base class of every error fedloom raises deliberately."""


class ConfigError(FedloomError, ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


class DataError(FedloomError):
    """A dataset could not be found or read; the message says how to get it."""


class ValidationError(FedloomError, ValueError):
    """Weights or an update do not match what the receiver expects."""


class WeightsMismatchError(ValidationError):
    """Tensor names, shapes or dtypes differ from the reference model."""


class NonFiniteError(ValidationError):
    """A tensor contains NaN or Inf values."""


class SerializationError(FedloomError, ValueError):
    """Bytes are not a valid fedloom model payload."""


class PayloadTooLargeError(SerializationError):
    """A payload exceeds the configured size limit."""


class IntegrityError(SerializationError):
    """The content hash in the header does not match the tensors."""


class RejectedUpdateError(FedloomError):
    """The round engine refused an update.

    ``code`` is a short machine-readable reason (``wrong_round``, ``unknown_client``,
    ``not_selected``, ``duplicate``, ``invalid_weights``, ``round_closed``,
    ``bad_num_samples``) and the message says what was wrong in words.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StoreError(FedloomError):
    """The persistent store failed, or holds no record with the requested id."""


class RegistrationRefusedError(StoreError):
    """The store refused to register an agent: nothing was written.

    ``code`` is the protocol's machine-readable reason (``name_taken``: the name is bound
    to another join token; ``agent_limit``: the token admits no more agent names;
    ``unauthorized``: the token was revoked meanwhile), the message says the fix.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ClientError(FedloomError):
    """A user Trainer raised, or returned something fedloom cannot use."""
