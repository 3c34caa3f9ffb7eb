"""Built-in passes: one file and one class each. The registry maps their names to them."""
