"""Extract a feature set defined outside gemo (examples/plugin/brightness.py).

    python examples/feature_plugin.py DATASET WORKDIR

Importing the plug-in module registers it; from then on it is one more set name.
"""

import sys
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).parent / "plugin"))  # or install it as a package
import brightness  # noqa: E402,F401  (registers the "brightness" feature set)

from gemo import api  # noqa: E402


def main(dataset, workdir):
    ws = api.Workspace(workdir)
    assert "brightness" in [row["name"] for row in api.feature_sets()]
    (report,) = api.extract(workspace=ws, dataset=dataset, sets=["brightness"],
                            params={"brightness": {"count": 4}}, workers=2, progress=False)
    print(f"brightness: {report.extracted} extracted, {report.skipped} already done, "
          f"{len(report.failed)} failed")
    with h5py.File(ws.cache_path("brightness"), "r") as f:
        clip = sorted(f["clips"])[0]
        print(f"{clip}: features {f['clips'][clip]['features'].shape}")
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
