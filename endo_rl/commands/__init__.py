"""CLI subcommands: argument parsing and printing only; the work lives in the library modules."""
