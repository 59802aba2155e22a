"""The dask executor gives the same caches as the local one; clusters stay on 127.0.0.1."""

import socket
import time

import numpy as np
import pytest
from click.testing import CliRunner

from gemo.cache.store import FeatureCache
from gemo.cli import cli
from gemo.extraction import extract
from gemo.workspace import Workspace

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

SETS = ["frames", "pyaudio"]
PARAMS = {"frames": {"size": 32}}


def _contents(workspace):
    result = {}
    for name in SETS:
        with FeatureCache(workspace.cache_path(name)) as cache:
            assert not cache.failures()
            result[name] = {clip_id: cache.read(clip_id) for clip_id in cache.ids()}
    return result


def _assert_same(expected, actual):
    assert expected.keys() == actual.keys()
    for name in expected:
        assert sorted(expected[name]) == sorted(actual[name])
        for clip_id, arrays in expected[name].items():
            assert arrays.keys() == actual[name][clip_id].keys()
            for key, value in arrays.items():
                np.testing.assert_array_equal(value, actual[name][clip_id][key])


@pytest.fixture(scope="module")
def local_reference(synth_data, tmp_path_factory):
    workspace = Workspace(tmp_path_factory.mktemp("local"))
    extract(workspace=workspace, dataset=synth_data, sets=SETS, params=PARAMS, workers=1,
            progress=False)
    return _contents(workspace)


def test_dask_local_cluster_matches_local_executor(synth_data, tmp_path, local_reference):
    workspace = Workspace(tmp_path / "dask")
    reports = extract(workspace=workspace, dataset=synth_data, sets=SETS, params=PARAMS,
                      workers=2, progress=False, executor="dask")
    clips = len(workspace.load_index().clips)
    assert [(r.extracted, r.failed) for r in reports] == [(clips, {})] * 2
    _assert_same(local_reference, _contents(workspace))


def test_cli_with_a_running_scheduler(synth_data, tmp_path, local_reference):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        result = CliRunner().invoke(cli, [
            "extract", str(synth_data), "--workdir", str(tmp_path / "ws"), "--only", ",".join(SETS),
            "-p", "frames.size=32", "--executor", "dask", "--scheduler", address, "--quiet",
        ])
    assert result.exit_code == 0, result.output
    _assert_same(local_reference, _contents(Workspace(tmp_path / "ws")))


def test_unreachable_scheduler_is_a_clear_error(synth_data, tmp_path):
    with socket.socket() as sock:  # a port of this machine that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        result = CliRunner().invoke(cli, [
            "extract", str(synth_data), "--workdir", str(tmp_path / "ws"), "--only", "pyaudio",
            "--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet",
        ])
    assert result.exit_code == 2, result.output
    assert "cannot reach the Dask scheduler" in result.output
    assert time.monotonic() - start < 20


def test_scheduler_needs_the_dask_executor(synth_data, tmp_path):
    result = CliRunner().invoke(cli, [
        "extract", str(synth_data), "--workdir", str(tmp_path / "ws"), "--only", "pyaudio",
        "--scheduler", "tcp://127.0.0.1:1", "--quiet",
    ])
    assert result.exit_code == 2 and "--executor dask" in result.output


class _CrashOn(distributed.WorkerPlugin):
    """Makes workers (restarted ones too) die when given the clip named ``stem``."""

    def __init__(self, stem):
        self.stem = stem

    def setup(self, worker):
        import os

        from gemo.extraction import workers

        original, stem = workers.run_in_worker, self.stem

        def run(specs, path, inputs):
            if os.path.splitext(os.path.basename(str(path)))[0] == stem:
                os._exit(1)
            return original(specs, path, inputs)

        workers.run_in_worker = run


def test_a_clip_that_kills_its_worker_is_recorded_as_crash(synth_data, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    victim = min(synth_data.rglob("*.mp4")).stem
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(_CrashOn(victim))
        reports = extract(workspace=workspace, dataset=synth_data, sets=["pyaudio"],
                          progress=False, executor="dask", scheduler=cluster.scheduler_address)
    clips = len(workspace.load_index().clips)
    assert reports[0].extracted == clips - 1
    assert list(reports[0].failed) == [victim] and reports[0].failed[victim]["kind"] == "crash"


def test_missing_dask_says_what_to_install(synth_data, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # import fails
    result = CliRunner().invoke(cli, [
        "extract", str(synth_data), "--workdir", str(tmp_path / "ws"), "--only", "pyaudio",
        "--executor", "dask", "--quiet",
    ])
    assert result.exit_code == 2 and "pip install 'gemo[dask]'" in result.output
