"""The one table of `TrainConfig` fields a user sets: the `train` command's flags
(`neuroalign.cli.train_commands`) and the dashboard's Train form (`neuroalign.ui.train_form`) are
both generated from `FIELDS`, so a field added here is a flag and (with `form=True`) a form widget.

Each `ConfigField` names its dotted config path, CLI flag, form label, one help text for both, its
kind and choices, the form section (also the CLI's argument group) and which neural tower kinds /
image heads it applies to (`applies`): the form shows only the fields of the chosen towers, and the CLI
says when a given flag has no effect on them.

No torch and no streamlit here: the CLI builds its parser from this table at startup.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from neuroalign import config as cfg

NEURAL_KIND_PATH = "neural.kind"  # the two fields the applicability of the others depends on
HEAD_PATH = "image.head"
ATTENTION_KINDS = tuple(k for k in cfg.NEURAL_KINDS if k != "linear")
KINDS = ("int", "float", "sci", "seconds", "choice", "bool", "path")


@dataclass(frozen=True)
class ConfigField:
    """One user-settable TrainConfig field.

    `kind`: "int" | "float" | "sci" (a float shown in scientific notation) | "seconds" (a float in
    the config and on the CLI, whole seconds in the form) | "choice" (one of `choices`) | "bool"
    (`--flag/--no-flag`) | "path" (CLI only). `zero`: what 0 means in the form when the config
    holds None there (e.g. "off"); `cli_zero`: the CLI accepts 0 with that meaning too.
    `neural_kinds` / `heads`: the neural tower kinds / image heads the field applies to (None = every one); a
    field with both applies when both hold, or when either holds with `any_of`. `min_value` /
    `max_value` bound the form's number widgets; on both sides `TrainConfig.validate` is the rule.
    `hidden_aliases`: old CLI spellings still accepted but left out of --help (a value given both
    ways must agree).
    """

    path: str
    flag: str
    label: str
    help: str
    kind: str
    section: str
    choices: tuple[str, ...] = ()
    neural_kinds: tuple[str, ...] | None = None
    heads: tuple[str, ...] | None = None
    any_of: bool = False
    form: bool = True
    min_value: float | None = None
    max_value: float | None = None
    zero: str | None = None
    cli_zero: bool = False
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # further CLI spellings of the flag (older names)
    hidden_aliases: tuple[str, ...] = ()  # old CLI spellings, accepted but not in --help
    open_choices: bool = False  # the CLI also takes values outside `choices` (config.validate decides)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.path}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"field {self.path}: choices go with kind 'choice' (and only with it)")
        if not self.flag.startswith("--"):
            raise ValueError(f"field {self.path}: flag must start with '--', got {self.flag!r}")

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag (`--lr-image` -> `lr_image`)."""
        return self.flag[2:].replace("-", "_")

    def applies(self, neural_kind: str, head: str) -> bool:
        """Whether the field has any effect with neural tower `neural_kind` and image head `head`."""
        kinds, heads = self.neural_kinds, self.heads
        if self.any_of:
            return (kinds is not None and neural_kind in kinds) or (heads is not None and head in heads)
        return (kinds is None or neural_kind in kinds) and (heads is None or head in heads)

    def scope(self) -> str:
        """Where the field applies, in words ('' when everywhere), e.g. 'transformer, latent neural towers'."""
        parts = []
        if self.heads is not None:
            parts.append(f"{', '.join(self.heads)} image head")
        if self.neural_kinds is not None:
            kinds = self.neural_kinds
            parts.append(f"{', '.join(kinds)} neural {'tower' if len(kinds) == 1 else 'towers'}")
        return (" or " if self.any_of else " with ").join(parts)

    def display(self, value: Any) -> str:
        """A config value as help text shows it."""
        if value is None:
            return self.zero or "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)


def lookup(d: dict[str, Any], path: str) -> Any:
    """The value at dotted `path` of a `TrainConfig.to_dict()`."""
    for part in path.split("."):
        d = d[part]
    return d


def preset_defaults(field: ConfigField) -> str:
    """'default from the preset: recommended 1, reference 2, attention 1', or 'default: 1, every
    preset' when they agree."""
    values = {name: field.display(lookup(d, field.path)) for name, d in _preset_dicts().items()}
    order = sorted(values, key=lambda n: n != "recommended")  # the CLI's default preset first
    if len(set(values.values())) == 1:
        return f"default: {values[order[0]]}, every preset"
    return "default from the preset: " + ", ".join(f"{n} {values[n]}" for n in order)


@functools.lru_cache(maxsize=1)
def _preset_dicts() -> dict[str, dict[str, Any]]:
    return {name: cfg.preset(name).to_dict() for name in cfg.PRESETS}


SCHEDULE, OPTIM, LOSS, IMAGE, NEURAL = "Schedule", "Optimisers", "Loss", "Image tower", "Neural tower"

FIELDS: tuple[ConfigField, ...] = (
    # -- schedule and run control ------------------------------------------------------------------
    ConfigField("epochs", "--epochs", "Epochs", "Maximum passes over the training images. The reference "
                "trains 5000; a few hundred are enough with cached frozen features.", "int", SCHEDULE,
                min_value=1),
    ConfigField("batch_size", "--batch-size", "Batch size", "Pairs per step. The contrastive loss uses the "
                "other pairs of the batch as negatives, so larger batches make the task harder and the "
                "signal richer.", "int", SCHEDULE, min_value=2),
    ConfigField("max_seconds", "--max-seconds", "Time budget (s)", "Wall-clock budget of the whole job: "
                "preparation (features, image-model choice, closed-form start), training and evaluation end "
                "within it; training stops early enough for the measured evaluation time (best checkpoint "
                "restored, then evaluated).", "seconds", SCHEDULE,
                min_value=0, zero="no limit"),
    ConfigField("early_stopping_patience", "--early-stopping", "Early stopping patience", "Stop when the "
                "validation score that picks the epoch has not improved for this many epochs.", "int",
                SCHEDULE, min_value=0, zero="off", cli_zero=True, metavar="EPOCHS"),
    ConfigField("seed", "--seed", "Seed", "Seed of initialisation and batch order (the split has its own "
                "seed).", "int", SCHEDULE, min_value=0),
    ConfigField("device", "--device", "Device", "auto = the CUDA GPU when there is one, else the CPU.",
                "choice", SCHEDULE, choices=cfg.DEVICES),
    ConfigField("threads", "--threads", "CPU threads", "Threads torch uses while training; 1 is often "
                "several times faster on a CPU that other work shares.",
                "int", SCHEDULE, min_value=0, zero="torch's default"),
    ConfigField("bf16", "--bf16", "bf16 autocast", "bf16 autocast (CUDA only).", "bool", SCHEDULE, form=False),
    # not in the form: "auto" is right for the dashboard's jobs (one process, or one per GPU)
    ConfigField("dist_backend", "--dist-backend", "Process group", "Process-group backend when a run has "
                "several processes (torchrun): auto = NCCL on CUDA, gloo on a CPU.", "choice", SCHEDULE, choices=cfg.DIST_BACKENDS, form=False),
    # -- optimisers ----------------------------------------------------------------------------------
    ConfigField("optim.image_lr", "--lr-image", "Image-side learning rate", "AdamW learning rate of the image "
                "tower (its head; the backbone too when fine-tuning). Reference 3e-4.", "sci", OPTIM,
                min_value=1e-8),
    ConfigField("optim.neural_lr", "--lr-neural", "Neural-side learning rate", "Learning rate of the neural "
                "tower. Reference 5e-5 (RMSprop).", "sci", OPTIM, min_value=1e-8),
    ConfigField("optim.neural_optimizer", "--neural-optimizer", "Neural-side optimiser", "RMSprop is the "
                "reference; AdamW with weight decay regularises the large per-neuron layers.", "choice",
                OPTIM, choices=cfg.NEURAL_OPTIMIZERS),
    # -- loss ------------------------------------------------------------------------------------------
    ConfigField("loss.temperature", "--temperature", "Temperature", "Softmax temperature of the contrastive "
                "loss: smaller = sharper (the start value when learnt). Reference 0.01.", "sci", LOSS,
                min_value=1e-4),
    ConfigField("loss.learnable_temperature", "--learnable-temperature", "Learn temperature", "Learn the "
                "temperature (CLIP-style) instead of keeping it fixed.", "bool", LOSS),
    ConfigField("loss.center", "--center", "Centred maps", "Mean-centre each map before normalising, so "
                "similarity is a correlation instead of a plain cosine.", "bool", LOSS),
    ConfigField("loss.w_clip", "--w-clip", "Weight: contrastive", "Weight of the symmetric contrastive (CLIP) "
                "loss.", "float", LOSS, min_value=0.0),
    ConfigField("loss.w_rmse", "--w-rmse", "Weight: RMSE", "Weight of the RMSE between the two maps.", "float",
                LOSS, min_value=0.0),
    ConfigField("loss.w_ssim", "--w-ssim", "Weight: 1 − SSIM", "Weight of the structural dissimilarity "
                "(1 - SSIM) of the maps.", "float", LOSS, min_value=0.0),
    # -- image tower -----------------------------------------------------------------------------------
    ConfigField("image.backbone", "--image-model", "Image model", "The frozen image features the image tower "
                "reads. auto: chosen per subject on its validation images among the V1 Gabor bank, random "
                "rectified filters, DS-Net and ImageNet-trained EfficientNet-Lite0 layers (needs the readout "
                "head). ds_net_*: the research code's DS-Net, random init unless --backbone-weights; "
                "efficientnet_lite0: ImageNet weights shipped with the package; v1_gabor: Gabor quadrature "
                "bank; random_rectified: the random-feature baseline's filters (stage 1: on the image; stages 2 and "
                "3: at half and a quarter of its resolution). CLI: also a model of your own "
                "as package.module:factory (README).", "choice", IMAGE, choices=cfg.BACKBONES,
                aliases=("--backbone",), open_choices=True, metavar="MODEL"),
    ConfigField("image.weights", "--backbone-weights", "Backbone weights", "Local state dict for the image "
                "model (DS-Net key format for ds_net_*, every tensor of the model otherwise; nothing is "
                "downloaded).", "path", IMAGE, form=False, metavar="PATH"),
    ConfigField("image.mode", "--backbone-mode", "Backbone mode", "frozen: backbone features computed once "
                "and cached, only the head learns (fast). finetune: the backbone learns too (slow on CPU).",
                "choice", IMAGE, choices=cfg.BACKBONE_MODES),
    ConfigField("image.stage", "--stage", "Stage", "Stage of the image model the feature is taken from "
                "(DS-Net 1-4, EfficientNet-Lite0 1-7, the filter banks 1; ignored by auto).", "int",
                IMAGE, min_value=1, max_value=7),
    ConfigField("image.block", "--block", "Block", "Block within that stage (1-based). When only the "
                "image model is changed (CLI or form), a stage and block left at the preset's values are "
                "capped to that model's last stage and block, and the nonlinearity becomes the model's own.",
                "int", IMAGE, min_value=1),
    ConfigField(HEAD_PATH, "--image-head", "Image head", "conv1x1: one 1x1-conv channel (reference). "
                "readout: a linear readout of every channel at every position of the pooled features, drawn "
                "as a smooth map.", "choice", IMAGE, choices=cfg.IMAGE_HEADS),
    ConfigField("image.transform", "--feature-transform", "Feature nonlinearity", "Fixed nonlinearity on the "
                "backbone features before pooling (square = local energy, what complex cells respond to).",
                "choice", IMAGE, choices=cfg.FEATURE_TRANSFORMS, heads=("readout",)),
    ConfigField("init", "--init", "Start", "linear: closed-form start (ridge on the predictable subspace; "
                "needs a frozen backbone). Other towers start random, and so does this one on the CLI when "
                "another tower is picked and --init is not given.", "choice", IMAGE, choices=cfg.INITS,
                neural_kinds=("linear",), heads=("readout",)),
    ConfigField("select_by", "--select-by", "Pick epoch by", "Validation score that picks the restored epoch "
                "and drives early stopping.", "choice", IMAGE, choices=cfg.SELECT_BY),
    ConfigField("n_components", "--components", "Shared dimensions", "Size of the shared space drawn as the "
                "16x64 map.", "int", IMAGE, min_value=1, max_value=1023, neural_kinds=("linear",),
                heads=("readout",), any_of=True, metavar="Q"),
    # -- neural tower ----------------------------------------------------------------------------------
    ConfigField(NEURAL_KIND_PATH, "--neural-kind", "Neural tower type", "reference: one attention layer as in "
                "the original; transformer: residual blocks with LayerNorm and FFN; latent: attention through "
                "a few learned latents (linear in the number of neurons); linear: one linear encoder with "
                "neuron dropout.", "choice", NEURAL, choices=cfg.NEURAL_KINDS, hidden_aliases=("--neural-block",)),
    ConfigField("neural.d_model", "--d-model", "Embedding size", "Per-neuron token width. Reference 512.",
                "int", NEURAL, min_value=8, neural_kinds=ATTENTION_KINDS),
    ConfigField("neural.n_heads", "--heads", "Attention heads", "Attention heads; must divide the embedding "
                "size.", "int", NEURAL, min_value=1, neural_kinds=ATTENTION_KINDS),
    ConfigField("neural.n_layers", "--layers", "Layers", "Attention layers (the reference tower has "
                "exactly 1).", "int", NEURAL, min_value=1, neural_kinds=("transformer", "latent")),
    ConfigField("neural.n_latents", "--latents", "Latents", "Learned queries of the latent tower.", "int",
                NEURAL, min_value=1, neural_kinds=("latent",), metavar="N"),
    ConfigField("neural.mlp_activation", "--mlp-activation", "MLP activation", "Nonlinearity of the map-head "
                "MLP; the reference MLP is purely linear (none).", "choice", NEURAL, choices=cfg.ACTIVATIONS,
                neural_kinds=ATTENTION_KINDS),
    ConfigField("neural.folded", "--folded", "Folded attention", "Compute the same function through K×K "
                "matrices (exact). Saves memory and time when the embedding is large; with a small "
                "embedding the plain path is faster.", "bool", NEURAL, neural_kinds=("reference", "latent")),
    ConfigField("neural.dropout", "--dropout", "Dropout", "Dropout in the MLP map head; in the linear tower "
                "neuron dropout on the input responses.", "float", NEURAL, min_value=0.0, max_value=0.9),
    ConfigField("data.repeat_augment", "--repeat-augment", "Repeat augmentation", "Probability that a "
                "training sample is one single-trial repeat instead of the mean.", "float", NEURAL,
                min_value=0.0, max_value=1.0, metavar="P"),
    ConfigField("data.normaliser", "--normaliser", "Response normaliser", "Per-neuron response scaling, "
                "fitted on the training images only.", "choice", NEURAL, choices=cfg.NORMALISERS),
)

SECTIONS = (SCHEDULE, OPTIM, LOSS, IMAGE, NEURAL)


def check_table(fields: tuple[ConfigField, ...]) -> None:
    """ValueError unless every path is a TrainConfig field and paths and flags are unique."""
    template = cfg.preset("reference").to_dict()
    for f in fields:
        try:
            lookup(template, f.path)
        except (KeyError, TypeError):
            raise ValueError(f"field table: {f.path!r} is not a TrainConfig field") from None
        if f.section not in SECTIONS:
            raise ValueError(f"field table: {f.path!r} has section {f.section!r}, expected one of {SECTIONS}")
        unknown = (sorted(set(f.neural_kinds or ()) - set(cfg.NEURAL_KINDS))
                   + sorted(set(f.heads or ()) - set(cfg.IMAGE_HEADS)))
        if unknown:
            raise ValueError(f"field table: {f.path!r} applies to unknown neural kind/head {', '.join(unknown)}")
    for attr in ("path", "flag"):
        seen = [getattr(f, attr) for f in fields]
        if attr == "flag":
            seen += [a for f in fields for a in (*f.aliases, *f.hidden_aliases)]
        dupes = sorted({x for x in seen if seen.count(x) > 1})
        if dupes:
            raise ValueError(f"field table: duplicate {attr}(s) {', '.join(dupes)}")


check_table(FIELDS)
