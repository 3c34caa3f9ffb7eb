"""Models: loading teachers and students, and running them on task batches."""
