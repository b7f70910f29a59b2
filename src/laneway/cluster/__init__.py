"""Several laneway instances on one PostgreSQL database."""
