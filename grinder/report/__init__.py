"""A self-contained HTML report of a backtest run folder: plotly charts and vectorbt statistics."""
