"""Export failures the CLI reports as one clear line, not a traceback."""


class ExportError(Exception):
    """Base class: the export stopped and wrote no version."""


class SourceError(ExportError):
    """The source is missing, malformed or not a model with the expected interface."""


class HubUnreachableError(SourceError):
    """The hub could not be reached within the bounded wait."""


class FidelityError(ExportError):
    """The written SavedModel does not reproduce the source model's output."""
