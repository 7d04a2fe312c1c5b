"""The report's pictures as PNG bytes, drawn with matplotlib (Agg; no pyplot, no display).

Importing this package imports matplotlib, so only code that draws imports it
(``tuner.write_report`` does so when it is called; ``import tuner`` does not).
"""

from tuner.plots._render import PLOTS, PlotFn, render_plot, render_plots

__all__ = ["PLOTS", "PlotFn", "render_plot", "render_plots"]
