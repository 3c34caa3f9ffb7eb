"""BERT -> SqueezeBERT: group structure, permutation search, least-squares block fit, building the student."""
