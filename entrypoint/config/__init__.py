"""services.toml and Procfiles: loading, validation, and the frozen runtime spec."""
