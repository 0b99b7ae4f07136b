"""The HTTP layer: routes, wire schemas and error mapping. The only package that imports FastAPI."""
