"""Training: the one loop (fine-tuning and distillation), distillation losses, cached teacher outputs."""
