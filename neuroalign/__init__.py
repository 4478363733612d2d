"""neuroalign: align visual-cortex population responses with image features.

Sub-packages: `data` (MAT io, subject store, splits, normalisers, simulated subjects),
`models` (DS-Net image tower, neural tower, losses), `training` (trainer, run directories,
background jobs), `evaluation` (retrieval metrics, map similarity, baselines). The library never
imports streamlit; only `app.py`, `pages/` and `neuroalign.ui` do.
"""

__version__ = "0.1.0"
