"""Built-in tasks with verifiable answers and rule rewards."""
