"""The Train page's hyperparameter form, generated from the field table (`neuroalign.config_fields`):
which widgets exist, preset values <-> widget values <-> TrainConfig.

The image model, the image head and the neural tower type are *selectors*: the page draws them above
the form (so that changing them reruns the page) and the form shows only the fields that apply to the
chosen towers. Picking another image model sets the layer fields (stage, block, nonlinearity) to a
layer that model has (`config.with_image_model_layer`: the preset's, capped to the model), so the
form shows what will run. Fields that do not apply keep the preset's value.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from neuroalign import config as cfgmod
from neuroalign.config_fields import FIELDS, HEAD_PATH, NEURAL_KIND_PATH, SECTIONS
from neuroalign.config_fields import ConfigField, lookup
from neuroalign.ui import keys

BACKBONE_PATH = "image.backbone"
SELECTOR_PATHS = (BACKBONE_PATH, HEAD_PATH, NEURAL_KIND_PATH)
LAYER_PATHS = ("image.stage", "image.block", "image.transform")  # follow the image model (`image_model_changed`)
SECTIONS_PER_ROW = 3  # five side by side truncate labels and values below ~1,500 px


def widget_key(field: ConfigField) -> str:
    """The session-state key of a field's widget: the prefix + its dotted config path."""
    return keys.TRAIN_FIELD_PREFIX + field.path


def form_fields(table: tuple[ConfigField, ...] = FIELDS) -> tuple[ConfigField, ...]:
    """The table's fields the form shows (selectors included)."""
    return tuple(f for f in table if f.form)


def selectors(table: tuple[ConfigField, ...] = FIELDS) -> tuple[ConfigField, ...]:
    """The image-model, image-head and neural-tower-type fields, in `SELECTOR_PATHS` order."""
    by_path = {f.path: f for f in form_fields(table)}
    return tuple(by_path[p] for p in SELECTOR_PATHS)


def sections(table: tuple[ConfigField, ...] = FIELDS) -> dict[str, tuple[ConfigField, ...]]:
    """Section name -> the form's fields in it (selectors excluded), sections in table order."""
    out = {}
    for name in SECTIONS:
        fs = tuple(f for f in form_fields(table) if f.section == name and f.path not in SELECTOR_PATHS)
        if fs:
            out[name] = fs
    return out


FORM_FIELDS: tuple[ConfigField, ...] = form_fields()  # the table's fields the form shows
FORM_SECTIONS: dict[str, tuple[ConfigField, ...]] = sections()


def form_help(field: ConfigField) -> str:
    """The tooltip: the table's help, plus what 0 means where 0 stands for 'none'."""
    return f"{field.help} 0 = {field.zero}." if field.zero else field.help


def chosen_towers(values: dict[str, Any], preset_name: str) -> tuple[str, str]:
    """(neural tower kind, image head) in widget `values`, else the preset's."""
    base = cfgmod.preset(preset_name)
    return (values.get(keys.TRAIN_FIELD_PREFIX + NEURAL_KIND_PATH, base.neural.kind),
            values.get(keys.TRAIN_FIELD_PREFIX + HEAD_PATH, base.image.head))


def default_subjects(usable: list[str], last_opened: str | None, infos: list[Any],
                     last_trained: str | None) -> list[str]:
    """The Train page's initial subject: the one last opened on the Subjects page, else the one trained
    last, else a simulated demo subject (fresh install), else the first one."""
    for name in (last_opened, last_trained):
        if name in usable:
            return [name]
    demo = [i.name for i in infos if getattr(i, "simulated", False) and i.name in usable]
    return demo[:1] or usable[:1]


def start_label(chosen: list[str], shown: int = 3) -> str:
    """The launch button's label, counting the runs one click starts: 'Start 1 run: m1',
    'Start 3 runs: m1, m2, m3', 'Start 5 runs: m1, m2, m3 + 2 more'; 'Start training' with none."""
    if not chosen:
        return "Start training"
    names = ", ".join(chosen[:shown]) + (f" + {len(chosen) - shown} more" if len(chosen) > shown else "")
    return f"Start {len(chosen)} run{'' if len(chosen) == 1 else 's'}: {names}"


def _to_widget(field: ConfigField, value: Any) -> Any:
    if field.zero and value is None:
        value = 0
    if field.kind in ("int", "seconds"):
        return int(value)
    if field.kind in ("float", "sci"):
        return float(value)
    return value


def _to_config(field: ConfigField, value: Any) -> Any:
    if field.zero and not value:
        return None
    if field.kind == "int":
        return int(value)
    if field.kind in ("float", "sci", "seconds"):
        return float(value)
    if field.kind == "bool":
        return bool(value)
    return value


def widget_values(config: cfgmod.TrainConfig, table: tuple[ConfigField, ...] = FIELDS) -> dict[str, Any]:
    """Widget key -> value for every form field (shown or not), from a config."""
    d = config.to_dict()
    return {widget_key(f): _to_widget(f, lookup(d, f.path)) for f in form_fields(table)}


def config_from_values(preset_name: str, values: dict[str, Any],
                       table: tuple[ConfigField, ...] = FIELDS) -> cfgmod.TrainConfig:
    """A validated TrainConfig: the preset with every form field that applies to the chosen towers
    taken from `values` (widget key -> value); the others keep the preset's values.

    Raises ValueError with a one-line reason for an invalid combination.
    """
    base = cfgmod.preset(preset_name)
    neural_kind, head = chosen_towers(values, preset_name)
    changes = {f.path: _to_config(f, values[widget_key(f)]) for f in form_fields(table)
               if widget_key(f) in values and f.applies(neural_kind, head)}
    config = base.replace(**changes)
    if config.image.backbone != base.image.backbone:  # a layer the chosen image model has, where not set
        config = cfgmod.with_image_model_layer(
            config, stage_given=config.image.stage != base.image.stage,
            block_given=config.image.block != base.image.block,
            transform_given=config.image.transform != base.image.transform)
    config = cfgmod.with_compatible_init(config)
    config = config.replace(preset=cfgmod.preset_label(config, preset_name))
    config.validate()
    return config


def layer_values(preset_name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Widget key -> value of the layer fields (`LAYER_PATHS`) for the image model and head in
    `values`: the preset's layer, capped to what that model has, with its own nonlinearity."""
    by_path = {f.path: f for f in form_fields()}
    base = cfgmod.preset(preset_name)
    model = values.get(widget_key(by_path[BACKBONE_PATH]), base.image.backbone)
    head = values.get(widget_key(by_path[HEAD_PATH]), base.image.head)
    config = base.replace(**{BACKBONE_PATH: model, HEAD_PATH: head})
    if model != base.image.backbone:
        config = cfgmod.with_image_model_layer(config)
    d = config.to_dict()
    return {widget_key(by_path[p]): _to_widget(by_path[p], lookup(d, p)) for p in LAYER_PATHS}


def image_model_changed(preset_name: str) -> None:
    """The image-model selector's callback: the layer fields follow the new model (`layer_values`)."""
    st.session_state.update(layer_values(preset_name, st.session_state))


def draw_selectors(preset_name: str, paths: tuple[str, ...] = SELECTOR_PATHS) -> tuple[str, str]:
    """Give every form field its preset value unless it has one, draw the selectors in `paths`
    (outside the form, so a change reruns the page and shows the fields that apply; the others are
    not drawn and keep their values), and return the chosen (neural kind, head)."""
    for k, v in widget_values(cfgmod.preset(preset_name)).items():
        st.session_state.setdefault(k, v)
    drawn = [f for f in selectors() if f.path in paths]
    for col, f in zip(st.columns(len(SELECTOR_PATHS)) if drawn else [], drawn):  # same widths when fewer are drawn
        on_change = (image_model_changed, (preset_name,)) if f.path == BACKBONE_PATH else (None, ())
        col.selectbox(f.label, f.choices, key=widget_key(f), help=form_help(f),
                      on_change=on_change[0], args=on_change[1])
    for f in selectors():
        if f.path not in paths:
            st.session_state[widget_key(f)] = st.session_state[widget_key(f)]
    return chosen_towers(st.session_state, preset_name)


# The fields a shared model (training.shared_runs: closed form, one linear read-in per subject) reads
SHARED_PATHS = ("image.backbone", "image.stage", "image.block", "image.transform", "n_components", "data.normaliser")


def draw_shared_fields(title: str = "Shared model") -> None:
    """Only the fields a shared model reads (`SHARED_PATHS`; its image model is a selector above the
    form), in one row of three columns; the others keep their values through Streamlit's widget
    clean-up."""
    shown = [f for f in FORM_FIELDS if f.path in SHARED_PATHS and f.path not in SELECTOR_PATHS]
    st.markdown(f"**{title}**")
    cols = st.columns(SECTIONS_PER_ROW)
    for i, f in enumerate(shown):
        _draw_widget(cols[i % len(cols)], f)
    for f in FORM_FIELDS:
        if f.path not in SHARED_PATHS and f.path not in SELECTOR_PATHS:
            st.session_state[widget_key(f)] = st.session_state[widget_key(f)]


def draw_sections(neural_kind: str, head: str) -> None:
    """The form's sections, `SECTIONS_PER_ROW` per row, each with the fields that apply to the towers."""
    items = list(FORM_SECTIONS.items())
    for row_start in range(0, len(items), SECTIONS_PER_ROW):
        for col, (section, fields) in zip(st.columns(SECTIONS_PER_ROW), items[row_start:row_start + SECTIONS_PER_ROW]):
            col.markdown(f"**{section}**")
            for f in fields:
                if f.applies(neural_kind, head):
                    _draw_widget(col, f)
                else:  # not drawn: keep its value through Streamlit's widget clean-up for when it is shown again
                    st.session_state[widget_key(f)] = st.session_state[widget_key(f)]


def _draw_widget(col: Any, f: ConfigField) -> None:
    key, help_text = widget_key(f), form_help(f)
    if f.kind == "choice":
        col.selectbox(f.label, f.choices, key=key, help=help_text)
    elif f.kind == "bool":
        col.checkbox(f.label, key=key, help=help_text)
    elif f.kind in ("int", "seconds"):
        col.number_input(f.label, min_value=None if f.min_value is None else int(f.min_value),
                         max_value=None if f.max_value is None else int(f.max_value), step=1, key=key,
                         help=help_text)
    else:
        col.number_input(f.label, min_value=f.min_value, max_value=f.max_value,
                         format="%.2e" if f.kind == "sci" else "%.3f", step=None if f.kind == "sci" else 0.05,
                         key=key, help=help_text)
