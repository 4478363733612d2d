"""Colours shared by every figure: the palette, the colour scales (as explicit stops) and the layout."""

from __future__ import annotations

import re

PALETTE = ("#2f6fdf", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#6c757d", "#c2185b", "#2e7d32")

# Streamlit's plotly theme sends the colours #000001-#000040 as placeholders and the browser
# replaces every occurrence in the figure JSON with a theme colour; plotly's Magma and Inferno
# start at exactly #000004, so their darkest values would be drawn in a theme colour (pink).
THEME_PLACEHOLDER = re.compile(r"#0000(?:0[1-9]|[1-3][0-9]|40)(?![0-9a-f])", re.IGNORECASE)


def explicit_colorscale(name: str) -> list[list]:
    """Plotly's named colour scale as explicit [position, colour] stops, with any colour that
    Streamlit's theme would replace (#000001-#000040) written as the same colour in rgb() form."""
    import plotly.colors

    stops = []
    for pos, colour in plotly.colors.get_colorscale(name):
        if THEME_PLACEHOLDER.fullmatch(colour.strip()):
            r, g, b = plotly.colors.hex_to_rgb(colour.strip())
            colour = f"rgb({r}, {g}, {b})"
        stops.append([float(pos), colour])
    return stops


MAP_COLORSCALE = explicit_colorscale("Viridis")  # feature maps, similarity, reliability
DIFF_COLORSCALE = explicit_colorscale("RdBu_r")  # signed differences, centred at 0
RASTER_COLORSCALE = explicit_colorscale("Magma")  # responses (z-scores)
GRAY_COLORSCALE = explicit_colorscale("gray")  # stimuli
LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=40, b=40))
