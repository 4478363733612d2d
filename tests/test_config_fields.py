"""The one field table (`neuroalign.config_fields`) that the `train` flags and the Train form are
both generated from: a field added there is in both, help states the presets' defaults, and each
field knows which towers it applies to."""

import argparse
import dataclasses
import re

import pytest

from neuroalign import config_fields
from neuroalign.cli import build_parser, main
from neuroalign.cli.train_commands import add_config_flags, build_config, ignored_flags
from neuroalign.config import TrainConfig, preset
from neuroalign.config_fields import FIELDS, ConfigField, check_table, preset_defaults
from neuroalign.ui import keys, train_form

GRAD_CLIP = ConfigField("optim.grad_clip", "--grad-clip", "Gradient clip", "Clip the gradient norm.", "float",
                        config_fields.OPTIM, min_value=0.0, zero="off")


def _train_parser(table) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="recommended")
    add_config_flags(p, table)
    return p


def test_a_new_field_is_both_a_flag_and_a_form_widget():
    table = FIELDS + (GRAD_CLIP,)
    args = _train_parser(table).parse_args(["--grad-clip", "2.5"])
    assert build_config(args, table).optim.grad_clip == 2.5
    assert build_config(_train_parser(FIELDS).parse_args([]), FIELDS).optim.grad_clip is None
    with pytest.raises(SystemExit):  # not a flag of the table without it
        _train_parser(FIELDS).parse_args(["--grad-clip", "2.5"])

    assert GRAD_CLIP in train_form.sections(table)[config_fields.OPTIM]
    assert GRAD_CLIP not in train_form.FORM_SECTIONS[config_fields.OPTIM]
    key = keys.TRAIN_FIELD_PREFIX + "optim.grad_clip"
    values = train_form.widget_values(preset("recommended"), table)
    assert values[key] == 0.0  # None in the config is 0 ("off") in the form
    values[key] = 1.5
    cfg = train_form.config_from_values("recommended", values, table)
    assert cfg.optim.grad_clip == 1.5 and cfg.preset == "custom"


def test_help_states_the_presets_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # issue 12 item 15: not argparse's "default 2" for a preset that uses stage 1
    assert "--stage STAGE Stage of the image model" in text
    stage = text[text.index("--stage STAGE Stage of the image model"):text.index("--block BLOCK Block")]
    assert "recommended 1" in stage and "reference 2" in stage and "attention 1" in stage
    for f in FIELDS:  # every flag, with its help text and the presets' defaults
        assert f.flag in text, f.flag
        assert " ".join(preset_defaults(f).split()) in text, f.flag
        assert " ".join(f.help.split()) in text, f.flag
    assert "(0 = off;" in text  # --early-stopping 0 switches it off
    assert "transformer, latent neural towers only" in text  # --layers says where it applies
    assert "--neural-block" not in text  # the old flag name is accepted but not offered
    assert preset_defaults(next(f for f in FIELDS if f.path == "seed")) == "default: 1234, every preset"


def test_dist_backend_flag():
    cfg = build_config(build_parser().parse_args(["train", "--subjects", "x", "--dist-backend", "gloo"]))
    assert cfg.dist_backend == "gloo" and cfg.preset == "recommended"  # run control keeps the preset name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--subjects", "x", "--dist-backend", "mpi"])


def test_where_fields_apply():
    by_path = {f.path: f for f in FIELDS}
    assert not by_path["neural.d_model"].applies("linear", "readout")
    assert all(by_path["neural.d_model"].applies(b, "conv1x1") for b in ("reference", "transformer", "latent"))
    assert by_path["neural.folded"].applies("latent", "readout") and not by_path["neural.folded"].applies("transformer", "readout")
    comp = by_path["n_components"]  # readout head OR linear neural tower
    assert comp.applies("linear", "conv1x1") and comp.applies("reference", "readout")
    assert not comp.applies("reference", "conv1x1")
    init = by_path["init"]  # the closed-form start: readout head AND linear neural tower
    assert init.applies("linear", "readout") and not init.applies("linear", "conv1x1")
    assert not init.applies("transformer", "readout")
    assert all(by_path[p].applies(b, h) for p in ("epochs", "neural.kind", "image.head", "neural.dropout")
               for b in ("linear", "latent") for h in ("readout", "conv1x1"))
    args = build_parser().parse_args(["train", "--subjects", "x", "--heads", "2", "--d-model", "64", "--epochs", "3"])
    assert ignored_flags(args, build_config(args)) == ["--d-model", "--heads"]  # the linear tower has neither


def test_table_refuses_mistakes():
    check_table(FIELDS)
    with pytest.raises(ValueError, match="not a TrainConfig field"):
        check_table(FIELDS + (dataclasses.replace(GRAD_CLIP, path="optim.grad_clipping"),))
    with pytest.raises(ValueError, match="duplicate flag"):
        check_table(FIELDS + (dataclasses.replace(GRAD_CLIP, flag="--epochs"),))
    with pytest.raises(ValueError, match="unknown neural kind/head perceiver"):
        check_table(FIELDS + (dataclasses.replace(GRAD_CLIP, neural_kinds=("perceiver",)),))
    with pytest.raises(ValueError, match="duplicate flag.*--neural-block"):
        check_table(FIELDS + (dataclasses.replace(GRAD_CLIP, hidden_aliases=("--neural-block",)),))
    with pytest.raises(ValueError, match="kind"):
        dataclasses.replace(GRAD_CLIP, kind="number")
    with pytest.raises(ValueError, match="choices"):
        dataclasses.replace(GRAD_CLIP, kind="choice")
    # every user-facing flag name of the train command is one of the table's or a run-management one
    flags = set(re.findall(r"--[a-z0-9-]+", build_parser()._subparsers._group_actions[0].choices["train"].format_usage()))
    table_flags = {f.flag for f in FIELDS} | {"--no-" + f.flag[2:] for f in FIELDS if f.kind == "bool"}
    assert flags - table_flags == {"--subjects", "--resume", "--data-dir", "--runs-dir", "--cache-dir", "--preset",
                                   "--quiet", "--shared", "--adapt-from", "--no-baselines"}


def test_every_table_path_round_trips_through_the_form():
    """widget_values -> config_from_values gives back the preset, for every preset."""
    for name in ("recommended", "reference", "attention"):
        cfg = preset(name)
        assert train_form.config_from_values(name, train_form.widget_values(cfg)).to_dict() == cfg.to_dict()
    assert isinstance(build_config(build_parser().parse_args(["train", "--subjects", "x"])), TrainConfig)


def test_train_says_which_flags_have_no_effect(tmp_path, capsys):
    code = main(["train", "--subjects", "nobody", "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path),
                 "--heads", "2", "--latents", "8", "--epochs", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and "nobody" in err[-1]
    assert err[:-1] == [f"note: {flag} has no effect with the linear neural tower and the readout image head; ignored"
                        for flag in ("--heads", "--latents")]


# ---- issue 22 item 5: the neural tower's type is `kind` (it was `block`, like the image layer) ----------

def _old_style(config: TrainConfig) -> dict:
    """`config.to_dict()` as a run folder written before the rename stores it: `neural.block`."""
    d = config.to_dict()
    d["neural"] = {("block" if k == "kind" else k): v for k, v in d["neural"].items()}
    return d


def test_an_old_config_json_with_neural_block_loads_as_the_new_key():
    for name in ("recommended", "attention", "reference"):
        cfg = preset(name).replace(**{"neural.kind": "latent", "init": "random", "neural.n_layers": 2})
        old = _old_style(cfg)
        assert "kind" not in old["neural"] and old["neural"]["block"] == "latent"
        assert TrainConfig.from_dict(old) == TrainConfig.from_dict(cfg.to_dict()) == cfg
        assert TrainConfig.from_dict(old).to_dict()["neural"]["kind"] == "latent"  # written back under the new key
        # both keys, agreeing: accepted
        assert TrainConfig.from_dict({**old, "neural": {**old["neural"], "kind": "latent"}}) == cfg
    assert cfg.image.block == preset("reference").image.block  # the image layer's block is untouched


def test_the_old_dotted_key_is_the_new_one_in_replace():
    base = preset("attention")
    assert base.replace(**{"neural.block": "latent"}) == base.replace(**{"neural.kind": "latent"})
    assert base.replace(**{"neural.block": "latent", "neural.kind": "latent"}).neural.kind == "latent"
    assert base.replace(**{"image.block": 2}).image.block == 2 and base.replace(**{"image.block": 2}).neural == base.neural


def test_both_neural_keys_with_different_values_are_refused():
    old = _old_style(preset("recommended"))
    with pytest.raises(ValueError, match=r"^NeuralTowerConfig settings give both 'kind' \('latent'\) and its old "
                                         r"name 'block' \('linear'\); keep 'kind' only$"):
        TrainConfig.from_dict({**old, "neural": {**old["neural"], "kind": "latent"}})
    with pytest.raises(ValueError, match=r"^config changes give both 'neural.kind' \('latent'\) and its old name "
                                         r"'neural.block' \('linear'\); keep 'neural.kind' only$"):
        preset("recommended").replace(**{"neural.kind": "latent", "neural.block": "linear"})
    with pytest.raises(ValueError, match="unknown NeuralTowerConfig field"):  # other unknown keys still are
        TrainConfig.from_dict({**old, "neural": {**old["neural"], "blocks": "latent"}})


def test_the_old_neural_block_flag_parses_as_neural_kind(capsys):
    parse = build_parser().parse_args
    for kind in ("latent", "transformer", "reference", "linear"):
        old = build_config(parse(["train", "--subjects", "x", "--neural-block", kind]))
        new = build_config(parse(["train", "--subjects", "x", "--neural-kind", kind]))
        assert old == new and new.neural.kind == kind
    both = build_config(parse(["train", "--subjects", "x", "--neural-kind", "latent", "--neural-block", "latent"]))
    assert both.neural.kind == "latent"
    args = parse(["train", "--subjects", "x", "--neural-block", "linear", "--heads", "2"])
    assert ignored_flags(args, build_config(args)) == ["--heads"]
    with pytest.raises(ValueError, match=r"^--neural-kind latent and its old name --neural-block linear disagree; "
                                         r"give --neural-kind only$"):
        build_config(parse(["train", "--subjects", "x", "--neural-kind", "latent", "--neural-block", "linear"]))
    with pytest.raises(SystemExit):  # the old name keeps the choices
        parse(["train", "--subjects", "x", "--neural-block", "lstm"])
    capsys.readouterr()
    assert main(["train", "--subjects", "x", "--neural-kind", "latent", "--neural-block", "linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --neural-kind latent and its old name --neural-block linear disagree; give --neural-kind only"]
