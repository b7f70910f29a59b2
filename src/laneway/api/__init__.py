"""The HTTP face of laneway: routes, encoding, errors, auth, metrics and OpenAPI."""
