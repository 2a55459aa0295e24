"""The split guard moved to `jaxtool.eval.split_guard` (below the applications, so iTool uses it
without importing the DiaTool-DPO builder); re-exported here for existing importers."""

from jaxtool.eval.split_guard import SplitGuard, bfcl_data_dir, bfcl_queries, normalize_query

__all__ = ["SplitGuard", "bfcl_data_dir", "bfcl_queries", "normalize_query"]
