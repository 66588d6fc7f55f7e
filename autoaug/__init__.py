"""autoaug: search augmentation policies for vision-language models.

The library's public surface: the batch type, the op registry and the policy.
"""

from importlib.metadata import PackageNotFoundError, version

from autoaug.batch import MultimodalBatch, TextVocabulary
from autoaug import ops
from autoaug.policy import Policy

try:
    __version__ = version("autoaug")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["MultimodalBatch", "Policy", "TextVocabulary", "ops", "__version__"]
