"""Pure rendering: spec in, plain dicts out. No clock, environment or network here."""
