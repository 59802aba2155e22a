"""What a newcomer reads first: README's set-up commands and the notes around them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_has_exactly_the_two_set_up_commands_and_what_they_cost():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2
    assert commands[0].endswith("gemo demo") and commands[1].endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs what the README tells a newcomer to run
    assert "minutes" in setup  # how long each takes
    assert "--index-url https://download.pytorch.org/whl/cpu" in setup  # a CPU-only laptop
    assert "GEMO_THREADS" in readme


def test_the_demo_folder_is_ignored_and_docs_need_nothing_only_developers_have():
    assert "gemo-demo/" in (ROOT / ".gitignore").read_text().split()
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.py")]:
        assert "../shared" not in doc.read_text(), doc
