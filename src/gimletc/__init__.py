"""gimletc: a compiler for AI inference on mixed hardware."""

from gimletc.errors import ConfigError, DoesNotFitError, GimletError, UnknownNameError
from gimletc.models import Model, get_model

__version__ = "0.1.0"

__all__ = ["ConfigError", "DoesNotFitError", "GimletError", "Model", "UnknownNameError", "__version__", "get_model"]
