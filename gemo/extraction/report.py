"""What the workspace's caches hold, for ``gemo info``."""

from pathlib import Path

from gemo.cache.store import FeatureCache


def cache_summary(workspace):
    """Per cache file: set name, clips done, failures, parameters, size on disk."""
    rows = []
    for path in sorted(Path(workspace.cache_dir).glob("*.h5")):
        with FeatureCache(path) as cache:
            provenance = cache.provenance
            rows.append(
                {
                    "feature_set": provenance["feature_set"],
                    "path": str(path),
                    "done": len(cache.ids()),
                    "failed": cache.failures(),
                    "params": provenance["params"],
                    "extractor_version": provenance["extractor_version"],
                    "libraries": provenance["libraries"],
                    "gemo_version": provenance["gemo_version"],
                    "size_bytes": path.stat().st_size,
                }
            )
    return rows
