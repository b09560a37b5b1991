//! The single YAML entry point (YAML 1.1 habits: octal `0755`, `yes`/`no`, `<<` merges).
