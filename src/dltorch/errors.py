"""Errors a user can act on. Stages print them without a traceback and exit non-zero."""


class DltorchError(Exception):
    """Base class: the message says what is wrong and where."""


class ParamsError(DltorchError):
    """params.yaml (or a model's arguments) is invalid."""


class DataError(DltorchError):
    """A data file is missing, corrupt or unavailable."""


class ExportError(DltorchError):
    """The model cannot be exported as a valid ONNX graph with the required dynamic axes."""


class ParityError(DltorchError):
    """The exported model does not match torch within tolerance."""


class CheckpointError(DltorchError):
    """A model or checkpoint file is missing or unreadable."""


class DeviceError(DltorchError):
    """The configured device (e.g. `train.device: cuda`) is not available on this machine."""


class QualityGateError(DltorchError):
    """A model's test metric falls short of the quality gate set for it in params.yaml."""


class TrackingError(DltorchError):
    """The MLflow tracking server cannot be reached."""
