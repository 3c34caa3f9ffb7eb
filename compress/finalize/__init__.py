"""`compress finalize`: the study's front retrained at full budget, the baselines trained, all timed honestly.

finalize.py  the command: pick, retrain, time, compare, check the latency model
front.py     which proxy students are retrained (the front, and a challenger per baseline)
forms.py     each final student and baseline built in every deploy form the teacher is timed in
timing.py    the final timing run and the latency model's check, interleaved and repeated
paired.py    paired bootstrap comparisons of every final student against every rival
"""
