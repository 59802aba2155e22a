"""Pool workers: they import gemo from where the main process does, and a worker that cannot
start says why on the clips it was given."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_clip

from gemo.cache.store import FeatureCache
from gemo.extraction import extract
from gemo.extractors import base
from gemo.workspace import Workspace


def _dataset(directory, names):
    for name in names:
        make_clip(directory / f"{name}.mp4", seconds=1.0, size=(32, 24))
    (directory / "list.csv").write_text(
        "path,split,label\n" + "".join(f"{n}.mp4,train,1\n" for n in names))
    return directory / "list.csv"


@pytest.mark.parametrize("command", ["console script", "python script"])
def test_a_gemo_folder_in_the_current_directory_is_not_what_workers_import(tmp_path, command):
    """The usual layout: gemo cloned into ~/gemo and run from ~ (gemo issue 10).

    The fork server the workers come from is started with ``python -c``, whose module path
    begins with the current directory: it imported the folder instead of gemo, and every
    worker died at start-up. The main process's path begins with the script's folder
    instead, the console script's or the user's own. (``python -m`` puts the current
    directory first in the main process too, which then imports the folder itself.)
    """
    if command == "console script":
        script = shutil.which("gemo", path=str(Path(sys.executable).parent))
        if script is None:
            pytest.skip("no gemo console script beside this Python (gemo not pip-installed)")
        prefix = [script]
    else:
        script = tmp_path / "project" / "run.py"
        script.parent.mkdir()
        script.write_text("import sys\n\nfrom gemo.cli import main\n\n"
                          "if __name__ == '__main__':\n    sys.exit(main())\n")
        prefix = [sys.executable, str(script)]
    # A package of that name, importable: first on the path of any ``python -c``. (A clone's
    # folder, without __init__.py, hides gemo only from an editable install's import hook.)
    (tmp_path / "gemo").mkdir()
    (tmp_path / "gemo" / "__init__.py").write_text('"""Not gemo: a folder of that name."""\n')
    data = _dataset(tmp_path, ["a_1", "a_2", "a_3"])
    workdir = tmp_path / "ws"
    result = subprocess.run(
        [*prefix, "extract", str(data), "--workdir", str(workdir), "--only", "frames",
         "-p", "frames.size=16", "-p", "frames.count=2", "--workers", "2", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "frames: 3 extracted" in result.stdout + result.stderr
    with FeatureCache(Workspace(workdir).cache_path("frames")) as cache:
        assert sorted(cache.ids()) == ["a_1", "a_2", "a_3"] and not cache.failures()


def test_the_fork_server_preloads_what_workers_run():
    """Pools pickle a worker's functions by reference: the fork server must have imported
    their module, or each worker imports it for itself (a wrong name is ignored silently)."""
    import importlib
    import pickle

    from gemo.extraction import workers

    for function in (workers.init_worker, workers.run_in_worker):
        assert pickle.loads(pickle.dumps(function)) is function
        assert function.__module__ in workers.PRELOAD
    for module in workers.PRELOAD:
        importlib.import_module(module)


def test_a_worker_that_cannot_start_says_why(tmp_path, enter):
    """Workers of the fork server do not know a set registered in this process only: each
    clip records that the worker could not start, and why, instead of only that it died."""

    class Local(base.Extractor):
        name = "local-test"

        def compute(self, media):
            return {"x": np.zeros(1)}

    enter(base.registered(Local))
    data = _dataset(tmp_path, ["a_1", "a_2"])
    [report] = extract(workspace=Workspace(tmp_path / "ws"), dataset=data, sets=["local-test"],
                       workers=2, progress=False)
    assert report.extracted == 0 and sorted(report.failed) == ["a_1", "a_2"]
    for failure in report.failed.values():
        assert failure["kind"] == "crash"
        assert failure["message"].startswith("the worker process could not start: GemoError: ")
        assert "local-test" in failure["message"]


def test_exit_codes_trust_the_sentinel_while_another_thread_reaps():
    """The pool's own thread reaps its workers too: meanwhile ``is_alive()`` can say True for
    a process that has ended, and its code appears a moment later. Such a worker's code is
    still read (it is the one that died); one still running at the deadline is left out."""
    import multiprocessing
    import threading

    from gemo.extraction import workers

    class Reaped:  # ended: its sentinel is ready; the other thread sets the code later
        def __init__(self):
            self.sentinel, writer = multiprocessing.Pipe(duplex=False)
            writer.close()
            self.exitcode = None
            threading.Timer(0.2, setattr, (self, "exitcode", -9)).start()

        def is_alive(self):
            return self.exitcode is None

        def kill(self):
            raise AssertionError("an ended process is not killed")

    class Running:
        def __init__(self):
            self.sentinel, self._writer = multiprocessing.Pipe(duplex=False)
            self.exitcode, self.killed = None, False

        def kill(self):
            self.killed = True

    running = Running()
    assert workers.exit_codes([Reaped(), running], timeout=1.0) == [-9]
    assert running.killed
    assert workers.how_they_died([-9]) == "killed by signal SIGKILL"
