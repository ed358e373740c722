"""Every path a user names is opened through one door (gatescope.files, gatescope.validation): a static
scan of gatescope/ for the ways Python, numpy, torch, h5py, onnx and zipfile open a file, each hit outside
the door on an explicit list with the reason it is safe. A new reader that opens a user's path another
way fails here until it goes through the door (or is argued onto the list)."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "gatescope"
OPENS = re.compile(r"(?<![\w.])open\(|\.read_text\(|\.read_bytes\(|np\.load\(|json\.loads?\(|h5py\.File\(|"
                   r"zipfile\.ZipFile\(|safe_open\(|np\.memmap\(|torch\.load\(|onnx\.load\(|os\.open\(")
DOOR = {"files.py", "validation/safetensors.py"}  # the opener and the one JSON parser
ALLOWED = {  # module -> (what it opens, why that is not a user's path read another way)
    "checkpoints/formats/__init__.py": ("safe_open(|zipfile.ZipFile(", "after kind_of opened it through "
                                        "open_regular (a safetensors file, or a zip's names)"),
    "checkpoints/formats/keras.py": ("zipfile.ZipFile(|h5py.File(", "after check_regular; every member and "
                                     "dataset checked before it is read (_member, _check_h5)"),
    "checkpoints/formats/onnx.py": ("onnx.load(", "in load_model, after check_regular and the size limit"),
    "checkpoints/formats/torch_state.py": ("torch.load(", "after kind_of opened it through open_regular"),
    "checkpoints/formats/torchscript.py": ("zipfile.ZipFile(|torch.load(", "after kind_of; torch.load is named "
                                           "in its docstring only"),
    "checkpoints/formats/converted.py": ("open(", "a method named open (no file)"),
    "inputs/corpus.py": ("safe_open(", "after check_regular; the rust reader bounds the header"),
    "inputs/stimuli/agreement.py": ("open(", "writes gatescope's own stimuli file (inside atomic_write)"),
    "runs/chunks.py": ("open(", "/proc/meminfo"),
    "tui/pages.py": ("open(", "/proc/self/maps"),
    "traces/file.py": ("np.memmap(|open(", "maps a file validate_trace checked; writes a trace"),
    "validation/text.py": ("np.memmap(", "maps a .npy whose header npy_header checked"),
    "findings/code.py": (".read_text(", "the bundled standard-library corpus, not a user's path"),
    "samples/data.py": (".read_text(", "the bundled sample corpus"),
}


def test_every_user_path_is_opened_through_the_door():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module in DOOR:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if code.lstrip().startswith(('"', "'", "``", "-")) or not OPENS.search(code):
                continue
            hits = {m.group(0).lstrip(".") for m in OPENS.finditer(code)}
            allowed = ALLOWED.get(module, ("",))[0].split("|")
            if not all(any(a.lstrip(".") == h for a in allowed) for h in hits):
                found[f"{module}:{number}"] = code.strip()
    assert not found, "a path opened outside gatescope.files / gatescope.validation:\n" + "\n".join(
        f"  {where}: {code}" for where, code in found.items())


def test_the_allow_list_holds_nothing_stale():
    for module, (names, _) in ALLOWED.items():
        text = (PACKAGE / module).read_text(encoding="utf-8")
        assert any(name in text for name in names.split("|")), module
