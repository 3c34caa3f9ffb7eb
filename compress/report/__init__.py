"""`compress report`: a study's points against what a user gets without compress.

points.py   trials, final students, baselines and teacher forms as one DataFrame
summary.py  the numbers (`ReportSummary`): baselines matched, headline speed-up, latency model quality
frontier.py Pareto front, hypervolume, knee;  plots.py  charts;  render.py  Markdown and HTML
report.py   writes the report folder (all or nothing)
"""
