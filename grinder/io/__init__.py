"""File writing shared by the CLI, the reports and the live adapter."""
