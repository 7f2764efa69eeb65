"""Built-in plugins: one optimization per file, registered through entry points."""
