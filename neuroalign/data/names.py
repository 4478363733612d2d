"""Subject names: which new names are usable (`check_subject_name`), and whether a name is taken.

Rules for new subjects: 1-100 characters and at most 200 UTF-8 bytes, normalised to Unicode
NFC; any script is fine (e.g. "Maus-Zoë", "鼠1"), but not: empty or surrounding spaces, path
separators, a leading '.', '..' anywhere, a trailing '.', control or invisible format
characters, the characters < > : " | ? * (not allowed on Windows) or a Windows device name
(CON, PRN, AUX, NUL, COM1-9, LPT1-9, also with an extension), nor `incoming` (the dashboard's default
import folder, `<data>/incoming`, which is never taken for a subject). Existing folders with other names
are still listed and loadable (`folder_name` only insists on one path component).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

_MAX_NAME_CHARS = 100
_MAX_NAME_BYTES = 200
_WINDOWS_FORBIDDEN = set('<>:"|?*')
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                    *(f"lpt{i}" for i in range(1, 10))}
#: the dashboard's default import folder, `<data>/incoming` (`neuroalign.paths.INCOMING`): recordings copied to
#: the server wait there. Never a subject: not listed, not deleted, not a new subject's name.
IMPORT_FOLDER = "incoming"


def check_subject_name(name: str) -> str:
    """Return `name` (NFC-normalised) if usable as a new subject folder name, else raise ValueError.

    The rules are in the module docstring.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("subject name is empty; expected a name such as 'M6'")
    name = unicodedata.normalize("NFC", name)
    if name != name.strip():
        raise ValueError(f"subject name {name!r} has leading/trailing spaces; expected a plain folder name")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"subject name {name!r} contains a path separator; expected a plain folder name")
    if ".." in name or name.startswith("."):
        raise ValueError(f"subject name {name!r} starts with '.' or contains '..'; expected a plain folder name")
    if name.endswith("."):
        raise ValueError(f"subject name {name!r} ends with '.'; expected a plain folder name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        raise ValueError(f"subject name {name!r} has control, invisible or undecodable characters; "
                         "expected visible characters")
    bad = sorted(set(name) & _WINDOWS_FORBIDDEN)
    if bad:
        raise ValueError(f"subject name {name!r} contains {' '.join(bad)}; expected a plain folder name "
                         f"without any of < > : \" | ? *")
    if name.casefold() == IMPORT_FOLDER:
        raise ValueError(f"subject name {name!r} is the data folder's import folder (<data>/{IMPORT_FOLDER}, where "
                         "recordings wait to be imported); expected another name")
    if name.split(".")[0].strip().lower() in _WINDOWS_DEVICES:
        raise ValueError(f"subject name {name!r} is a reserved device name on Windows; expected another name")
    if len(name) > _MAX_NAME_CHARS or len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise ValueError(f"subject name of {len(name)} characters ({len(name.encode('utf-8'))} UTF-8 bytes) is too "
                         f"long; expected at most {_MAX_NAME_CHARS} characters and {_MAX_NAME_BYTES} bytes")
    return name


def folder_name(name: str) -> str:
    """Lenient check for names of existing folders: one path component inside the root."""
    if not isinstance(name, str) or not name or name in (".", "..") or "\0" in name \
            or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"subject name {name!r} is not a plain folder name")
    return name


def name_taken(root: Path, name: str) -> bool:
    """Whether anything (a folder, a file, even a dangling link) already uses `name` in `root`.

    The one rule for "does this subject exist already": imports and demo creation write only
    names for which it is False.
    """
    return os.path.lexists(Path(root) / folder_name(name))
