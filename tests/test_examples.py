"""Each script of examples/ runs as a user runs it: a separate Python process, tiny sizes."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from gemo import api

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


def _run(*args, code=None):
    """Run an example (or ``code`` with ``args`` as its argv) in a new Python process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]), "GEMO_THREADS": "1"}
    command = [sys.executable, *(["-c", code] if code else []), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def pyaudio_cache(tmp_path_factory, synth_data):
    work = tmp_path_factory.mktemp("examples-work")
    (report,) = api.extract(workspace=api.Workspace(work), dataset=synth_data, sets=["pyaudio"],
                            workers=1, progress=False)
    return work / "cache" / "pyaudio.h5", report


@pytest.mark.slow  # about 50 s: synthesis, extraction, two trainings
def test_api_end_to_end(tmp_path):
    out = _run(EXAMPLES / "api_end_to_end.py", tmp_path)
    assert "frames: 48 clips extracted, 0 failed" in out
    for name in ("audio-pyaudio-blstm-attention", "scene-frames-frame-cnn", "fusion-mean"):
        assert f"{name}: val accuracy" in out
    assert (tmp_path / "work" / "reports" / "val").is_dir()


def test_read_cache_with_h5py_alone(pyaudio_cache):
    path, report = pyaudio_cache
    # Runs the example and fails if anything imported gemo on the way.
    out = _run(path, code=(
        "import runpy, sys; "
        f"runpy.run_path({str(EXAMPLES / 'read_cache_h5py.py')!r}, run_name='__main__'); "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'gemo'], 'gemo imported'"))
    assert f"{report.extracted} clips done, 0 failed" in out
    spec = importlib.util.spec_from_file_location("read_cache_h5py",
                                                  EXAMPLES / "read_cache_h5py.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    provenance, clips, failed = module.read_cache(path)
    assert provenance["feature_set"] == "pyaudio" and not failed
    with h5py.File(path, "r") as f:  # the arrays are the cache's, unchanged
        clip = sorted(clips)[0]
        np.testing.assert_array_equal(clips[clip]["features"], f["clips"][clip]["features"][()])


def test_feature_plugin_from_outside_gemo(tmp_path, synth_data):
    # Two worker processes: they find the plug-in class by importing its module.
    out = _run(EXAMPLES / "feature_plugin.py", synth_data, tmp_path / "work")
    clips = len(api.Workspace(tmp_path / "work").load_index().clips)
    assert f"brightness: {clips} extracted, 0 already done, 0 failed" in out
    assert "features (4, 6)" in out
    again = _run(EXAMPLES / "feature_plugin.py", synth_data, tmp_path / "work")
    assert f"brightness: 0 extracted, {clips} already done" in again


@pytest.mark.slow  # about 30 s: a local Dask cluster of two worker processes
def test_dask_extract_on_a_local_cluster(tmp_path, synth_data):
    pytest.importorskip("distributed")
    out = _run(EXAMPLES / "dask_extract.py", synth_data, tmp_path / "work")
    clips = len(api.Workspace(tmp_path / "work").load_index().clips)
    assert f"frames: {clips} extracted, 0 already done, 0 failed" in out
    assert f"pyaudio: {clips} extracted, 0 already done, 0 failed" in out


def test_slurm_examples():
    check = subprocess.run(["bash", "-n", str(EXAMPLES / "slurm" / "extract.sbatch")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    script = (EXAMPLES / "slurm" / "extract.sbatch").read_text()
    assert "--executor dask" in script and "#SBATCH --cpus-per-task" in script
    if importlib.util.find_spec("dask_jobqueue") is None:
        done = subprocess.run([sys.executable, str(EXAMPLES / "slurm_cluster.py"),
                               "--print-job-script"], capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stderr.strip() == ("error: dask-jobqueue is not installed: pip install "
                                       "dask-jobqueue, or submit examples/slurm/extract.sbatch")
    else:  # the job script is made without SLURM
        assert "#SBATCH" in _run(EXAMPLES / "slurm_cluster.py", "--print-job-script")
