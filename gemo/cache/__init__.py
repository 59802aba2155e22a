from gemo.cache.store import CacheMismatch, FeatureCache, fingerprint_file

__all__ = ["CacheMismatch", "FeatureCache", "fingerprint_file"]
