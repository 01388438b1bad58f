"""The run directory: runs written and read without trusting the disk, routing documents, compact export."""
