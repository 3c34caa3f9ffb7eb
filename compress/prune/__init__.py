"""Structured pruning of whole attention heads and FFN channels, kept loadable by transformers.

What transformers can reload decides what we prune:
- heads: through `prune_heads` (it records `config.pruned_heads`, which `from_pretrained` replays), so layers
  may keep different numbers of heads and head_dim is unchanged. BERT's is transformers' own; SqueezeBERT's is
  broken upstream and replaced by `compress.modeling.squeezebert` (grouped attention convs lose heads evenly
  per group), so a SqueezeBERT with pruned heads reloads once compress is imported.
- FFN channels: the same count in every layer (`config.intermediate_size` is one number). BERT goes
  through torch-pruning's dependency graph (importance and the coupled intermediate/output slicing);
  SqueezeBERT's grouped 1x1 convs are sliced here, because a grouped conv's input channels are per-group
  slices that must shrink evenly so the group counts stay valid - beyond what torch-pruning's graph does.
"""
