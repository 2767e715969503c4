"""Gallery migration: translate stored templates from one model's space into another's, in bulk."""
