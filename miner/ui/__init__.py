"""What the user sees: rates and units, the live panel, the output modes and plots."""
