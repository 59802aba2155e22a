"""Start-up of `gemo extract`: what the main process imports, and when the workers' fork server
starts (gemo issue 17: 9-16 s passed before the first clip)."""

import subprocess
import sys

import numpy as np
from conftest import make_clip

from gemo.cache.store import FeatureCache
from gemo.extraction import runner
from gemo.registry import Registry
from gemo.workspace import Workspace


class _Entry:
    def __init__(self, name, filename):
        self.name, self.filename = name, filename


def test_a_registered_name_is_found_without_importing_the_other_modules():
    """A lookup of an entry already registered must not import every module that registers
    others: for a weights entry that cost 2 s of scikit-learn and torchvision."""
    def registry():
        made = Registry("thing", modules=("gemo_no_such_module",))
        made.register(_Entry("here", "here.pt"))
        return made

    found = registry()
    assert found.get("here").filename == "here.pt"
    assert "here" in found
    assert found.first(lambda entry: entry.filename == "here.pt").name == "here"
    # Anything else needs every module: here one that does not exist, so it says so.
    for lookup in (lambda: registry().get("elsewhere"), lambda: "elsewhere" in registry(),
                   lambda: registry().first(lambda entry: entry.filename == "x.pt")):
        try:
            lookup()
        except ModuleNotFoundError as error:
            assert error.name == "gemo_no_such_module"
        else:
            raise AssertionError("the modules were not imported")


def test_building_and_running_the_face_sets_imports_no_training_code_nor_torchvision():
    """The main process builds the extractors and the caches' provenance while the workers'
    fork server imports: it must not import scikit-learn or gemo's models on the way. Nor
    may face detection import torchvision (or facenet-pytorch, which imports it): its ops
    import torch._dynamo, 1.5 s of every start-up."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from gemo import extractors\n"
        "fer = extractors.create('fer')\n"
        "faces = extractors.create('faces')\n"
        "faces.detector().detect([np.full((90, 160, 3), 128, np.uint8)])\n"
        "print(sorted(m for m in ('sklearn', 'gemo.models', 'gemo.folds', 'torchvision',\n"
        "                         'facenet_pytorch', 'torch._dynamo') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def _workspace_with_frames(tmp_path, names):
    for name in names:
        make_clip(tmp_path / f"{name}.mp4", seconds=1.0, size=(32, 24))
    listing = tmp_path / "list.csv"
    listing.write_text("path,split,label\n" + "".join(f"{n}.mp4,train,1\n" for n in names))
    workspace = Workspace(tmp_path / "ws")
    workspace.use_dataset(listing)
    return workspace, listing


def test_the_fork_server_warms_up_only_when_clips_are_left(tmp_path):
    workspace, listing = _workspace_with_frames(tmp_path, ["a_1", "a_2"])
    clips = workspace.use_dataset(None).clips
    assert runner._work_likely(workspace, ["frames"], clips, overwrite=False)  # no cache yet
    assert not runner._work_likely(workspace, ["frames"], [], overwrite=False)  # no clips
    runner.extract(workspace=workspace, sets=["frames"], params={"frames": {"size": 16}},
                   workers=1, progress=False)
    assert not runner._work_likely(workspace, ["frames"], clips, overwrite=False)  # all done
    assert runner._work_likely(workspace, ["frames"], clips, overwrite=True)
    assert runner._work_likely(workspace, ["frames", "pyaudio"], clips, overwrite=False)
    with FeatureCache(workspace.cache_path("frames")) as cache:
        assert sorted(cache.ids()) == ["a_1", "a_2"]
        assert cache.read("a_1")["frames"].shape == (10, 16, 16, 3)
    # One clip more in the list: the cache lacks it.
    make_clip(tmp_path / "a_3.mp4", seconds=1.0, size=(32, 24))
    listing.write_text(listing.read_text() + "a_3.mp4,train,1\n")
    clips = workspace.use_dataset(listing).clips
    assert runner._work_likely(workspace, ["frames"], clips, overwrite=False)
    # An unreadable cache: the run goes ahead and says why itself.
    workspace.cache_path("frames").write_bytes(np.zeros(64, np.uint8).tobytes())
    assert runner._work_likely(workspace, ["frames"], clips, overwrite=False)


def test_the_command_line_freezes_what_is_left_before_python_exits(monkeypatch):
    """Python's exit collected every object of torch and torchvision one by one, 2 to 3 s
    after `gemo extract` had finished: gemo freezes them, whether the command succeeded
    or stopped with an error."""
    import gc

    from gemo.cli import app

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    for args, status in ((["--version"], 0), (["no-such-command"], 2)):
        monkeypatch.setattr(sys, "argv", ["gemo", *args])
        try:
            app.main()
        except SystemExit as done:
            assert done.code == status
        assert len(frozen) == 1
        frozen.clear()


def test_workers_fork_from_a_server_that_froze_what_it_imported():
    """The fork server freezes its objects before forking: a worker's garbage collector never
    walks what torch and the other libraries made at import, and the server exits at once."""
    import gc
    from concurrent.futures import ProcessPoolExecutor

    import pytest

    from gemo.extraction import workers

    context = workers.pool_context(["json"])
    if context.get_start_method() != "forkserver":
        pytest.skip("no fork server on this platform: workers are spawned")
    workers.start_fork_server()
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(gc.get_freeze_count).result() > 1000
