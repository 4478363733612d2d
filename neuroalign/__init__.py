"""neuroalign: align visual-cortex population responses with image features.

Sub-packages: `data` (MAT io, subject store, splits, normalisers, simulated subjects),
`models` (DS-Net image tower, neural tower, losses), `training` (trainer, run directories,
background jobs), `evaluation` (retrieval metrics, map similarity, baselines). The library never
imports streamlit; only `app.py`, `pages/` and `neuroalign.ui` do.

`neuroalign.Aligner` (`neuroalign.estimator`) is the estimator for notebooks and scripts; it is
imported on first use, so `import neuroalign` (and the CLI's --help) does not load torch.
"""

__version__ = "0.1.0"
__all__ = ["Aligner", "__version__"]


def __getattr__(name: str):
    if name == "Aligner":
        from neuroalign.estimator import Aligner

        return Aligner
    raise AttributeError(f"module 'neuroalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Aligner"})
