"""Read a gemo feature cache with h5py alone: no gemo import (docs/cache-format.md).

    python examples/read_cache_h5py.py WORKDIR/cache/pyaudio.h5

Prints the provenance, the finished and failed clips and one clip's arrays; returns them
as plain numpy arrays, keyed by clip id.
"""

import json
import sys

import h5py


def read_cache(path):
    """``(provenance, {clip id: {array: ndarray}}, {clip id: (kind, message)})``."""
    with h5py.File(path, "r") as f:
        provenance = {key: f.attrs[key] for key in ("feature_set", "extractor_version")}
        provenance["params"] = json.loads(f.attrs["params"])
        provenance["info"] = json.loads(f.attrs["info"])
        # Only groups marked complete are finished clips (a crash can leave a partial one).
        clips = {clip_id: {name: data[()] for name, data in group.items()}
                 for clip_id, group in f["clips"].items() if group.attrs.get("complete")}
        failures = f.get("failures", {})
        failed = {clip_id: (g.attrs["kind"], g.attrs["message"]) for clip_id, g in failures.items()}
    return provenance, clips, failed


def main(path):
    provenance, clips, failed = read_cache(path)
    print(f"{provenance['feature_set']} v{provenance['extractor_version']} {provenance['params']}")
    print(f"{len(clips)} clips done, {len(failed)} failed")
    first = sorted(clips)[0]
    for name, array in clips[first].items():
        print(f"  {first}/{name}: {array.dtype} {array.shape}")
    return provenance, clips, failed


if __name__ == "__main__":
    main(sys.argv[1])
