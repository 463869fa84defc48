"""HTTP API: app factory, routes and error mapping. Thin: no SQL here."""
