"""The Train page's hyperparameter form: field specs, preset values <-> widget values <-> TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neuroalign import config as cfgmod
from neuroalign.ui import keys


@dataclass(frozen=True)
class Field:
    """One form widget bound to a dotted TrainConfig key."""

    key: str  # dotted config key, e.g. "optim.image_lr"
    label: str
    kind: str  # "int" | "float" | "sci" | "select" | "bool"
    help: str
    options: tuple = ()
    min_value: float | None = None
    max_value: float | None = None
    none_as_zero: bool = False  # config None <-> widget 0 ("off")

    @property
    def widget_key(self) -> str:
        return keys.TRAIN_FIELD_PREFIX + self.key


SECTIONS: dict[str, tuple[Field, ...]] = {
    "Schedule": (
        Field("epochs", "Epochs", "int", "Passes over the training images. The reference trains 5000; "
              "a few hundred are enough with cached frozen features.", min_value=1),
        Field("batch_size", "Batch size", "int", "Pairs per step. The contrastive loss uses the other pairs "
              "of the batch as negatives, so larger batches make the task harder and the signal richer.",
              min_value=2),
        Field("max_seconds", "Time budget (s)", "int", "Stop cleanly after this many seconds (best checkpoint "
              "restored, then evaluated). 0 = no limit.", min_value=0, none_as_zero=True),
        Field("early_stopping_patience", "Early stopping patience", "int", "Stop when the validation loss has "
              "not improved for this many epochs. 0 = off.", min_value=0, none_as_zero=True),
        Field("seed", "Seed", "int", "Seed of initialisation and batch order (the split has its own seed).",
              min_value=0),
        Field("device", "Device", "select", "auto = the CUDA GPU when there is one, else the CPU.",
              options=cfgmod.DEVICES),
        Field("threads", "CPU threads", "int", "Threads torch uses while training. 0 = torch's default (all "
              "cores); 1 is often several times faster on a CPU that other work shares.", min_value=0,
              none_as_zero=True),
    ),
    "Optimisers": (
        Field("optim.image_lr", "Image-side learning rate", "sci", "AdamW learning rate of the image tower "
              "(the 1×1 projection; the backbone too when fine-tuning). Reference 3e-4.", min_value=1e-8),
        Field("optim.neural_lr", "Neural-side learning rate", "sci", "Learning rate of the neural tower. "
              "Reference 5e-5 (RMSprop).", min_value=1e-8),
        Field("optim.neural_optimizer", "Neural-side optimiser", "select", "RMSprop is the reference; AdamW "
              "with weight decay regularises the large per-neuron layers.", options=("rmsprop", "adamw")),
    ),
    "Loss": (
        Field("loss.temperature", "Temperature", "sci", "Softmax temperature of the contrastive loss: smaller "
              "= sharper. Reference 0.01.", min_value=1e-4),
        Field("loss.learnable_temperature", "Learn temperature", "bool", "Learn the temperature "
              "(CLIP-style) instead of keeping it fixed."),
        Field("loss.center", "Centred maps", "bool", "Mean-centre each map before normalising, "
              "so similarity is a correlation instead of a plain cosine."),
        Field("loss.w_clip", "Weight: contrastive", "float", "Weight of the symmetric contrastive (CLIP) loss.",
              min_value=0.0),
        Field("loss.w_rmse", "Weight: RMSE", "float", "Weight of the RMSE between the two maps.", min_value=0.0),
        Field("loss.w_ssim", "Weight: 1 − SSIM", "float", "Weight of the structural dissimilarity of the maps.",
              min_value=0.0),
    ),
    "Image tower": (
        Field("image.backbone", "Backbone", "select", "DS-Net variant (randomly initialised unless weights "
              "are given in the CLI config).", options=cfgmod.BACKBONES),
        Field("image.mode", "Backbone mode", "select", "frozen: backbone features computed once and cached, "
              "only the projection learns (fast). finetune: the backbone learns too (slow on CPU).",
              options=cfgmod.BACKBONE_MODES),
        Field("image.stage", "Stage", "int", "Backbone stage the feature is taken from (1-4). Reference 2.",
              min_value=1, max_value=4),
        Field("image.block", "Block", "int", "Block within that stage (1-based). Reference 4, i.e. blocks2.3.",
              min_value=1),
        Field("image.head", "Image head", "select", "conv1x1: one 1x1-conv channel (reference). readout: a linear "
              "readout of every channel at every position of the pooled features, drawn as a smooth map.",
              options=cfgmod.IMAGE_HEADS),
        Field("image.transform", "Feature nonlinearity", "select", "Readout head: fixed nonlinearity before pooling "
              "(square = local energy, what complex cells respond to).", options=cfgmod.FEATURE_TRANSFORMS),
        Field("init", "Start", "select", "linear: closed-form start (ridge, predictable subspace; needs the readout "
              "head, the linear block and a frozen backbone -- other towers start random).", options=cfgmod.INITS),
        Field("select_by", "Pick epoch by", "select", "Validation score that picks the restored epoch and drives "
              "early stopping.", options=cfgmod.SELECT_BY),
        Field("n_components", "Shared dimensions", "int", "Readout head / linear block: size of the shared space "
              "drawn as the 16x64 map.", min_value=1, max_value=1023),
    ),
    "Neural tower": (
        Field("neural.block", "Block type", "select", "reference: one attention layer as in the original; "
              "transformer: with residuals, LayerNorm and FFN; latent: attention through a few latents "
              "(scales to many neurons); linear: one linear encoder with neuron dropout (the default).",
              options=cfgmod.NEURAL_BLOCKS),
        Field("neural.d_model", "Embedding size", "int", "Per-neuron embedding width. Reference 512.",
              min_value=8),
        Field("neural.n_heads", "Attention heads", "int", "Must divide the embedding size.", min_value=1),
        Field("neural.n_layers", "Layers", "int", "Attention layers (the reference form has 1).", min_value=1),
        Field("neural.mlp_activation", "MLP activation", "select", "The reference MLP is purely linear (none).",
              options=cfgmod.ACTIVATIONS),
        Field("neural.folded", "Folded attention", "bool", "Reference and latent blocks: compute the same function through "
              "K×K matrices (exact). Saves memory and time when the embedding is large; with a small embedding "
              "the plain path is faster."),
        Field("neural.dropout", "Dropout", "float", "Dropout in the neural tower (linear block: neuron dropout).",
              min_value=0.0, max_value=0.9),
        Field("data.repeat_augment", "Repeat augmentation", "float", "Probability that a training sample is one "
              "single-trial repeat instead of the mean.", min_value=0.0, max_value=1.0),
        Field("data.normaliser", "Response normaliser", "select", "Per-neuron scaling fitted on the training "
              "images only.", options=cfgmod.NORMALISERS),
    ),
}

FIELDS: tuple[Field, ...] = tuple(f for section in SECTIONS.values() for f in section)
SECTIONS_PER_ROW = 3  # five side by side truncate labels and values below ~1,500 px


def default_subjects(usable: list[str], last_opened: str | None, infos: list[Any],
                     last_trained: str | None) -> list[str]:
    """The Train page's initial subject: the one last opened on the Subjects page, else the one trained
    last, else a simulated demo subject (fresh install), else the first one."""
    for name in (last_opened, last_trained):
        if name in usable:
            return [name]
    demo = [i.name for i in infos if getattr(i, "simulated", False) and i.name in usable]
    return demo[:1] or usable[:1]


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def widget_values(config: cfgmod.TrainConfig) -> dict[str, Any]:
    """Widget key -> value for every field, from a config."""
    d = config.to_dict()
    out = {}
    for f in FIELDS:
        v = _lookup(d, f.key)
        if f.none_as_zero and v is None:
            v = 0
        if f.kind == "int":
            v = int(v)
        elif f.kind in ("float", "sci"):
            v = float(v)
        out[f.widget_key] = v
    return out


def config_from_values(preset_name: str, values: dict[str, Any]) -> cfgmod.TrainConfig:
    """A validated TrainConfig: the preset with every field taken from `values` (widget key -> value).

    Raises ValueError with a one-line reason for an invalid combination.
    """
    base = cfgmod.preset(preset_name)
    changes: dict[str, Any] = {}
    for f in FIELDS:
        if f.widget_key not in values:
            continue
        v = values[f.widget_key]
        if f.none_as_zero and not v:
            v = None
        elif f.kind == "int":
            v = int(v)
        elif f.kind in ("float", "sci"):
            v = float(v)
        elif f.kind == "bool":
            v = bool(v)
        if f.key == "max_seconds" and v is not None:
            v = float(v)
        changes[f.key] = v
    config = cfgmod.with_compatible_init(base.replace(**changes))
    config = config.replace(preset=cfgmod.preset_label(config, preset_name))
    config.validate()
    return config
