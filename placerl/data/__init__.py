"""Local datasets: loading, validation, tokenization, collation."""
