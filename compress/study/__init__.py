"""`compress search`: the Optuna study over a recipe's space, its reference run, latency model and storage.

search.py     run, join or resume a study (workers.py: several processes)
objective.py  one trial: the recipe with sampled values, run and scored
space.py      sampling and checking the space;  target.py  the form every trial is scored in
reference.py  the teacher measured once;  latency.py  the study's calibrated latency model
storage.py    SQLite / PostgreSQL / journal storage, heartbeats;  info.py  search.json and finished trials
"""
