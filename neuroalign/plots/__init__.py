"""Plotly figure builders for the dashboard (no streamlit here), one module per figure family.

Every builder takes plain numpy arrays / lists of dicts and returns a `plotly.graph_objects.Figure`,
so pages only pick data and draw. `from neuroalign import plots` gives every builder and summary:

* `style`: the palette and the colour scales, sent as explicit stops Streamlit's theme cannot repaint;
* `summaries`: EMA smoothing, ranks of the true match, top-k, split-half reliability, raster order;
* `training`: loss and learning-rate curves;
* `subjects`: per-neuron statistics, histograms, the response raster;
* `retrieval`: similarity matrix, rank histogram, top-1 bars with intervals;
* `maps`: feature-map panels, mean maps, stimulus pictures;
* `shared`: shared runs -- cross-subject retrieval bars, the two embeddings of a test image;
* `neurons`: per-neuron importance of a trained run, ranked and against reliability or ground truth;
* `profile`: the layer-by-layer alignment profile (score and median FEVE vs depth, one line per image model).
"""

from neuroalign.plots.maps import (
    PANEL_TITLES,
    as_display_image,
    feature_map_panel,
    framed,
    map_range,
    mean_maps,
)
from neuroalign.plots.neurons import importance_ranked, importance_scatter
from neuroalign.plots.profile import profile_chart, profile_feve_chart
from neuroalign.plots.retrieval import rank_histogram, similarity_heatmap, top1_bars
from neuroalign.plots.shared import cross_subject_bars, embedding_heatmaps, embedding_lines
from neuroalign.plots.style import (
    DIFF_COLORSCALE,
    GRAY_COLORSCALE,
    LAYOUT,
    MAP_COLORSCALE,
    PALETTE,
    RASTER_COLORSCALE,
    THEME_PLACEHOLDER,
    explicit_colorscale,
)
from neuroalign.plots.subjects import histogram, neuron_stats, response_raster
from neuroalign.plots.summaries import ema_smooth, neuron_reliability, raster_order, top_k, true_match_ranks
from neuroalign.plots.training import loss_curves, lr_curves

__all__ = [
    "DIFF_COLORSCALE", "GRAY_COLORSCALE", "LAYOUT", "MAP_COLORSCALE", "PALETTE", "PANEL_TITLES", "RASTER_COLORSCALE",
    "THEME_PLACEHOLDER", "as_display_image", "cross_subject_bars", "embedding_heatmaps", "embedding_lines", "ema_smooth", "explicit_colorscale", "feature_map_panel", "framed",
    "histogram", "importance_ranked", "profile_chart", "profile_feve_chart", "importance_scatter", "loss_curves", "lr_curves", "map_range", "mean_maps", "neuron_reliability", "neuron_stats",
    "rank_histogram", "raster_order", "response_raster", "similarity_heatmap", "top1_bars", "top_k",
    "true_match_ranks",
]
