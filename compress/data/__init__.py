"""Task data: reading sources into train/validation/test splits, and tokenizing them into padded batches."""
