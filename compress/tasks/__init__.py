"""Task kinds: what a model predicts and how it is scored."""
