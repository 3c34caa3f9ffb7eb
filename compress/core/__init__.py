"""Foundation shared by every other package: errors, atomic files, hashes, optional dependencies, typed records.

Nothing here imports another compress package, so anything may import it.
"""
