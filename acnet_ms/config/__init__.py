"""Options: the option table (``options``) and the YAML + command-line merge over it (``loader``)."""
