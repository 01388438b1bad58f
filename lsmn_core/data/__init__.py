"""Tasks and their data: what a task is, and loading a task's splits from a data set, a user's
files, a factory or a stream."""
