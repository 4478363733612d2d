"""Session-state keys and environment switches used by the dashboard, in one place.

Widget keys are namespaced by page (`subjects.*`, `train.*`, ...) so tests can drive widgets by key.
"""

from __future__ import annotations

# Environment switch: set to 1 to skip creating the demo subjects on first start (tests, CI).
NO_DEMO_ENV = "NEUROALIGN_NO_DEMO"

# --- app-wide state ---------------------------------------------------------------------------
SELECTED_SUBJECT = "selected_subject"  # name of the subject last opened on the Subjects page
SELECTED_RUN = "selected_run"  # run dir (str) shared by Retrieval / Feature maps / Runs
APP_ENTERED = "_app_entered"  # set by app.py for each run it drives (see ui.entry)
DEMO_SEEN = "_demo_seen"  # this session saw the first-start demo job running (show its result once)
DEMO_ANNOUNCED = "_demo_announced"  # data roots whose demo result this session was shown

# --- Subjects page ----------------------------------------------------------------------------
SUBJECT_PICK = "subjects.pick"
UPLOAD_NAME = "subjects.upload_name"
UPLOAD_IMAGES = "subjects.upload_images"
UPLOAD_RESPONSES = "subjects.upload_responses"
UPLOAD_CHECK = "subjects.upload_check"
UPLOAD_SAVE = "subjects.upload_save"
UPLOAD_STAGED = "subjects.upload_staged"  # dict: name, images path, responses path, summary lines
UPLOAD_GENERATION = "subjects.upload_generation"  # +1 after a Save: fresh (empty) name and file widgets
IMPORT_FROM = "subjects.import_from"  # this computer (upload) | the server (import folders)
UPLOAD_FORMAT = "subjects.upload_format"  # MAT pair | NWB file
UPLOAD_NWB = "subjects.upload_nwb"
UPLOAD_NWB_IMAGES = "subjects.upload_nwb_images"  # a .mat images file for an NWB file without templates
NWB_SERIES = "subjects.nwb_series"
NWB_PRESENTATIONS = "subjects.nwb_presentations"
NWB_TEMPLATES = "subjects.nwb_templates"
NWB_INDEX_COLUMN = "subjects.nwb_index_column"
NWB_WINDOW_START = "subjects.nwb_window_start"
NWB_WINDOW_END = "subjects.nwb_window_end"
NWB_INVENTORY = "subjects.nwb_inventory"  # {file identity: what the NWB file offers, or the error}
SERVER_PICK = "subjects.server_pick"  # a candidate of the import folders (label)
SERVER_NAME = "subjects.server_name"
SERVER_IMAGES = "subjects.server_images"  # a hand-picked pair: the images .mat
SERVER_RESPONSES = "subjects.server_responses"
SERVER_NWB_IMAGES = "subjects.server_nwb_images"  # the images .mat of an NWB file without templates
SERVER_CHECK = "subjects.server_check"
SERVER_RESCAN = "subjects.server_rescan"
IMPORTED = "subjects.imported"  # the name just saved: said once in the Import tab (the toast goes)


def upload_widget(key: str, generation: int) -> str:
    """The key of an Import-tab widget (`UPLOAD_NAME`, `UPLOAD_IMAGES`, `UPLOAD_RESPONSES`) in its
    `generation`: a new key after each Save empties the widgets (a browser keeps a widget's value
    per key, so clearing its state would not)."""
    return key if not generation else f"{key}.{generation}"
DELETE_PICK = "subjects.delete_pick"
DELETE_CONFIRM = "subjects.delete_confirm"
DELETE_BUTTON = "subjects.delete"
GRID_COUNT = "subjects.grid_count"

# --- Train page -------------------------------------------------------------------------------
TRAIN_SUBJECTS = "train.subjects"
TRAIN_PRESET = "train.preset"
TRAIN_FORM = "train.form"
TRAIN_SUBMIT = "train.submit"
TRAIN_FIELD_PREFIX = "train.field."  # + dotted config key, e.g. "train.field.optim.image_lr"
TRAIN_SMOOTHING = "train.smoothing"
TRAIN_LOG_Y = "train.log_y"
TRAIN_STOP_PREFIX = "train.stop."  # + job id
TRAIN_RESUME_PREFIX = "train.resume."  # + job id
RESUME_ERRORS = "resume.errors"  # messages of the last failed Resume click, shown once
TRAIN_LAUNCHED = "train.launched"  # job ids launched from this session (info only)
TRAIN_ERRORS = "train.errors"  # messages of the last launch attempt, shown once
TRAIN_SHOW_FINISHED = "train.show_finished"
TRAIN_COMPARE = "train.compare"  # finished jobs overlaid on the live loss curves
TRAIN_COMPARE_AUTO = "train.compare_auto"  # False once the user picked jobs to overlay
TRAIN_WATCHED = "train.watched"  # labels of the jobs this session saw running (the chart follows them)
TRAIN_KIND = "train.kind"  # one run per subject | one shared model | adapt a new subject (ui.shared_view)
TRAIN_ADAPT_RUN = "train.adapt_run"  # the shared run a new subject is adapted from
TRAIN_ADAPT_SUBJECT = "train.adapt_subject"  # the new subject
TRAIN_ADAPT_SUBMIT = "train.adapt_submit"
SHARED_SUBJECT = "shared.subject"  # the subject picked inside a shared run (every result page opens on it)
TRAIN_FORM_OPEN = "train.form_open"  # True after a failed start: the form stays open until a start works

# --- Retrieval page ---------------------------------------------------------------------------
RETRIEVAL_RUN = "retrieval.run"
RETRIEVAL_QUERY = "retrieval.query"
RETRIEVAL_DIRECTION = "retrieval.direction"
RETRIEVAL_K = "retrieval.k"

# --- Feature maps page ------------------------------------------------------------------------
MAPS_RUN = "maps.run"
MAPS_SAMPLE = "maps.sample"  # position in the test set
MAPS_OVERLAY = "maps.overlay"
MAPS_CENTRE = "maps.centre"  # subtract the test-set mean map of each tower
MAPS_BEST = "maps.best"
MAPS_WORST = "maps.worst"
MAPS_RANDOM = "maps.random"
MAPS_PREV = "maps.prev"
MAPS_NEXT = "maps.next"

# --- Runs page --------------------------------------------------------------------------------
RUNS_FILTER_SUBJECT = "runs.filter_subject"
RUNS_FILTER_STATE = "runs.filter_state"
RUNS_TABLE = "runs.table"
RUNS_PICK = "runs.pick"
RUNS_SORT = "runs.sort"
RUNS_ONE = "runs.one"  # the run whose files / actions are shown
RUNS_DELETE_CONFIRM = "runs.delete_confirm"
RUNS_DELETE = "runs.delete"
RUNS_RESUME = "runs.resume"
RUNS_SMOOTHING = "runs.smoothing"
RUNS_LOG_Y = "runs.log_y"
RUNS_EXPORT_FORMAT = "runs.export_format"
RUNS_EXPORT_SUBJECT = "runs.export_subject"
RUNS_EXPORT_PREPARE = "runs.export_prepare"
RUNS_EXPORT_READY = "runs.export_ready"  # (run dir, format, subject, stamp) -> the prepared file's bytes
RUNS_EXPORT_DOWNLOAD = "runs.export_download"


def delete_confirm(prefix: str, item: str) -> str:
    """Key of a delete confirmation for one item (`DELETE_CONFIRM` / `RUNS_DELETE_CONFIRM` + name): a
    tick given for one subject or run never carries over to the next one the page shows."""
    return f"{prefix}.{item}"
