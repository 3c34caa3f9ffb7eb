"""`compress glue GLUE_DIR`: one recipe template (template.yaml, shipped in the package) over the GLUE tasks."""
