"""One error policy (STYLE §6): `assert` for internal invariants, `ValueError` naming the bad
input for user mistakes, and these domain errors for stores and models."""


class MegaContextError(Exception):
    """Base of every error MegaContext raises on purpose; the CLI prints its message alone."""


class StoreError(MegaContextError):
    """A store is missing, corrupt or not a MegaContext store."""


class StoreMismatchError(StoreError):
    """A store was built with another base model, block size or gister than this session."""


class StoreLockedError(StoreError):
    """Another process holds the store's single-writer lock."""


class ModelError(MegaContextError):
    """The base model can't be found or loaded."""
