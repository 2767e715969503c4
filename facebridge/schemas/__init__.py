"""The HTTP contract as pydantic models: shared by the routes, the library (Bridge) and the client."""
