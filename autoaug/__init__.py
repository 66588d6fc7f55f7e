"""autoaug: search augmentation policies for vision-language models.

The library's public surface: the batch type, the op registry, the policy and where a policy plugs
into training (`PolicyCallback`, `PolicyCollator`: loaded on first use, as `autoaug.policy` says why).
"""

from importlib.metadata import PackageNotFoundError, version

from autoaug.batch import MultimodalBatch, TextVocabulary
from autoaug import ops
from autoaug.policy import Policy

try:
    __version__ = version("autoaug")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["MultimodalBatch", "Policy", "PolicyCallback", "PolicyCollator", "TextVocabulary", "ops", "__version__"]


def __getattr__(name: str):
    """`PolicyCallback` and `PolicyCollator` from `autoaug.policy`, which loads them on first access."""
    if name in ("PolicyCallback", "PolicyCollator"):
        import autoaug.policy

        return getattr(autoaug.policy, name)
    raise AttributeError(f"module 'autoaug' has no attribute {name!r}")
