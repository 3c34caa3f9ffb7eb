"""Structured pruning of whole attention heads and FFN channels, kept loadable by plain transformers.

What transformers can reload decides what we prune:
- heads: BERT only, through transformers' own `prune_heads` (it records `config.pruned_heads`, which
  `from_pretrained` replays), so layers may keep different numbers of heads and head_dim is unchanged.
  SqueezeBERT's attention width is tied to its hidden size in its config: no head pruning there.
- FFN channels: the same count in every layer (`config.intermediate_size` is one number). BERT goes
  through torch-pruning's dependency graph (importance and the coupled intermediate/output slicing);
  SqueezeBERT's grouped 1x1 convs are sliced here, because a grouped conv's input channels are per-group
  slices that must shrink evenly so the group counts stay valid - beyond what torch-pruning's graph does.
"""
