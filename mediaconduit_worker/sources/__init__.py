"""Where providers and services come from: the URL grammar (``urls``), the allow-list (``allow``), and
git fetches pinned to a commit with the on-disk cache they fill (``git``, ``cache``)."""

from .allow import allow_list_is_set, check_allowed
from .cache import Checkout, SourceCache, extract_tree, file_lock
from .git import git_error_detail
from .urls import Source, parse_source, stable_id

__all__ = [
    "Checkout",
    "Source",
    "SourceCache",
    "allow_list_is_set",
    "check_allowed",
    "extract_tree",
    "file_lock",
    "git_error_detail",
    "parse_source",
    "stable_id",
]
