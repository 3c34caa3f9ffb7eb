"""Search and report: an Optuna study over a recipe's space, and the Pareto report of what it found."""
