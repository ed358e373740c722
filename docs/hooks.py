"""MkDocs hooks: the example notebooks are rendered as tutorials from where users find them (examples/).

Each notebook is added to the site's files as it lies in the repository (examples/NAME.ipynb, read from the
repository root), before mkdocs-jupyter converts notebooks (hence the higher event priority), so no copy of it
lives under docs/.
"""
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


@event_priority(100)
def on_files(files, config):
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        files.append(File(notebook.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"],
                          config["use_directory_urls"]))
    return files
