"""DuckDB access: the only package that writes SQL."""
