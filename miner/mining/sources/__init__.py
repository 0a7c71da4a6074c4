"""Work sources: where jobs come from and where solutions go."""
